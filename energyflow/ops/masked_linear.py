"""Block-masked linear maps as ``torch.library`` custom ops (docs/math.md, section 6).

    out = act(x (W * mask)^T + b),   mask[o, i] = 1 iff i < prefix[o]     (ops.mask_plan)

Backends (``dispatch.MASKED_BACKENDS``):

- ``"blocked"`` cuts the block triangle into strips of output groups, one GEMM each, in the
  forward pass and in both gradients (``ops.masked_strips``); the cut of each pass is the fastest
  one timed on the machine at first use, from the dense product (one strip) to one strip per
  level (CPU default).
- ``"triton"`` runs kernels that skip the masked tiles, with bias and activation in the
  epilogue (CUDA default).
- ``"reference"`` multiplies a dense weight by the mask (what nflows / zuko do), differentiated
  by torch's autograd: the correctness oracle.

On the CPU, ``"auto"`` runs each layer with the fastest of the dense masked product, the blocked
strips and, at a few batch rows, the extension's row kernel (internal name ``"rows"``: every pass
reads or writes the allowed weight entries once, where the dense product moves the whole weight
four to five times), timed on the whole layer at first use.

The fused kernels sit in one table, ``MASKED_LINEAR``, behind three custom ops (forward with
autograd, input gradient, weight gradient), so they compile like the pairwise ops. All paths
agree to rounding; the masked weight entries always get a zero gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from energyflow.ops import dispatch, masked_strips
from energyflow.ops.mask_plan import MaskPlan

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda t: t,
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "elu": F.elu,
}
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def activation_derivative(name: str, z: Tensor) -> Tensor:
    """d act(z) / dz for every activation of ``ACTIVATIONS`` (gelu exact, elu with alpha = 1).

    Example:
        >>> activation_derivative("relu", torch.tensor([-1.0, 2.0]))
        tensor([0., 1.])
    """
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "gelu":
        return 0.5 * (1.0 + torch.erf(z * math.sqrt(0.5))) + z * _INV_SQRT_2PI * torch.exp(
            -0.5 * z * z
        )
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if name == "tanh":
        return 1.0 - torch.tanh(z).square()
    if name == "elu":
        return torch.where(z > 0, torch.ones_like(z), torch.exp(z.clamp_max(0)))
    return torch.ones_like(z)


# ---- blocked: one GEMM per strip of the block triangle (ops.masked_strips) --------------------
def _blocked_forward(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, mask: Tensor,
    groups: list[int], activation: str, keep_preactivation: bool,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    cuts = masked_strips.cuts(groups, weight.shape[1], x.shape[0], x)
    # strips read masked entries
    z = masked_strips.forward(x, weight * mask, bias, cuts.forward, cuts.grouped[0])
    return _activated(z, activation, keep_preactivation)


def _activated(
    z: Tensor, activation: str, keep_preactivation: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """act(z) computed from a fresh pre-activation z, and z itself if kept for the backward."""
    if activation == "none":
        return z, None
    if activation == "relu":  # in place: the backward reads the output, as torch's relu does
        return z.clamp_min_(0), None
    return ACTIVATIONS[activation](z), z if keep_preactivation else None


def _blocked_grad_input(
    grad_z: Tensor, weight: Tensor, first_out: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    cuts = masked_strips.cuts(groups, weight.shape[1], grad_z.shape[0], grad_z)
    return masked_strips.grad_input(grad_z, weight * mask, cuts.grad_input, cuts.grouped[1])


def _blocked_grad_weight(
    grad_z: Tensor, x: Tensor, prefix: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    cuts = masked_strips.cuts(groups, x.shape[1], grad_z.shape[0], x)
    return masked_strips.grad_weight(grad_z, x, cuts.grad_weight, cuts.grouped[2]).mul_(mask)


# ---- rows: a few batch rows in the C++ extension, each pass over the allowed weights once -----
def _rows_forward(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, mask: Tensor,
    groups: list[int], activation: str, keep_preactivation: bool,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    bias = x.new_empty(0) if bias is None else bias
    z = dispatch.cpp_module().masked_rows_forward(x, weight, bias, groups)
    return _activated(z, activation, keep_preactivation)


def _rows_grad_input(
    grad_z: Tensor, weight: Tensor, first_out: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    return dispatch.cpp_module().masked_rows_grad_input(grad_z, weight, groups)


def _rows_grad_weight(
    grad_z: Tensor, x: Tensor, prefix: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    return dispatch.cpp_module().masked_rows_grad_weight(grad_z, x, groups)


# ---- triton: tile-skipping kernels ------------------------------------------------------------
def _triton_forward(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, mask: Tensor,
    groups: list[int], activation: str, keep_preactivation: bool,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    return dispatch.triton_kernels().masked_linear_forward(
        x.contiguous(),
        weight.contiguous(),
        bias,
        prefix,
        activation=activation,
        store_preactivation=keep_preactivation,
        acc_dtype=dispatch.accumulation_dtype(x.dtype),
        precision=dispatch.dot_precision(),
    )


def _triton_grad_input(
    grad_z: Tensor, weight: Tensor, first_out: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    return dispatch.triton_kernels().masked_linear_grad_input(
        grad_z.contiguous(),
        weight.contiguous(),
        first_out,
        acc_dtype=dispatch.accumulation_dtype(grad_z.dtype),
        precision=dispatch.dot_precision(),
    )


def _triton_grad_weight(
    grad_z: Tensor, x: Tensor, prefix: Tensor, mask: Tensor, groups: list[int]
) -> Tensor:
    return dispatch.triton_kernels().masked_linear_grad_weight(
        grad_z.contiguous(),
        x.contiguous(),
        prefix,
        acc_dtype=dispatch.accumulation_dtype(x.dtype),
        precision=dispatch.dot_precision(),
    )


@dataclass(frozen=True)
class MaskedLinearKernels:
    """One fused backend: forward (out and, if kept, the pre-activation) and both gradients."""

    forward: Callable[..., tuple[Tensor, Optional[Tensor]]]
    grad_input: Callable[[Tensor, Tensor, Tensor, Tensor, list[int]], Tensor]
    grad_weight: Callable[[Tensor, Tensor, Tensor, Tensor, list[int]], Tensor]


MASKED_LINEAR: dict[str, MaskedLinearKernels] = {
    "blocked": MaskedLinearKernels(_blocked_forward, _blocked_grad_input, _blocked_grad_weight),
    "triton": MaskedLinearKernels(_triton_forward, _triton_grad_input, _triton_grad_weight),
    "rows": MaskedLinearKernels(_rows_forward, _rows_grad_input, _rows_grad_weight),
}


# ---- the three primitives: custom ops (compiled graphs) and autograd Functions (eager) ---------
# Compiled code calls the custom ops, which torch.compile can trace; eager code calls the same
# kernels through autograd Functions, whose per-call cost is a few microseconds instead of the
# custom ops' ~100 (it dominates small layers). Both share the formulas below.
def _forward_impl(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, first_out: Tensor,
    mask: Tensor, groups: list[int], activation: str, keep_preactivation: bool, backend: str,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """x (M, in) -> act(x (W*mask)^T + b) (M, out), and the pre-activation (M, out) if kept
    (else an empty tensor)."""
    out, z = MASKED_LINEAR[backend].forward(
        x, weight, bias, prefix, mask, groups, activation, keep_preactivation
    )
    return out, z if z is not None else x.new_empty(0)


def _grad_input_impl(
    grad_z: Tensor, weight: Tensor, prefix: Tensor, first_out: Tensor, mask: Tensor,
    groups: list[int], backend: str,
) -> Tensor:  # fmt: skip
    """grad_z (M, out) -> grad_x = grad_z (W*mask) (M, in)."""
    return MASKED_LINEAR[backend].grad_input(grad_z, weight, first_out, mask, groups)


def _grad_weight_impl(
    grad_z: Tensor, x: Tensor, prefix: Tensor, first_out: Tensor, mask: Tensor,
    groups: list[int], backend: str,
) -> Tensor:  # fmt: skip
    """grad_z (M, out), x (M, in) -> grad_W = (grad_z^T x) * mask (out, in)."""
    return MASKED_LINEAR[backend].grad_weight(grad_z, x, prefix, mask, groups)


def _forward_fake(x, weight, bias, prefix, first_out, mask, groups, activation, keep, backend):
    out = x.new_empty(x.shape[0], weight.shape[0])
    return out, x.new_empty(out.shape if keep else (0,))


def _grad_input_fake(grad_z, weight, prefix, first_out, mask, groups, backend):
    return grad_z.new_empty(grad_z.shape[0], weight.shape[1])


def _grad_weight_fake(grad_z, x, prefix, first_out, mask, groups, backend):
    return x.new_empty(grad_z.shape[1], x.shape[1])


def _linear(x: Tensor, weight: Tensor, prefix, first_out, mask, groups, backend) -> Tensor:
    """x (W*mask)^T, differentiable (no bias, no activation)."""
    return _forward(x, weight, None, prefix, first_out, mask, groups, "none", False, backend)[0]


# ---- their derivatives ------------------------------------------------------------------------
def _grad_op_setup(ctx, inputs, output):
    left, right, prefix, first_out, mask, groups, backend = inputs
    ctx.save_for_backward(left, right, prefix, first_out, mask)
    ctx.options = (groups, backend)


# Both gradients are bilinear maps made of the layer's own masked products, so their derivatives
# are too: double (and higher) backward reuse the three primitives.
def _grad_input_backward(ctx, cotangent):
    grad_z, weight, *plan = ctx.saved_tensors
    groups, backend = ctx.options
    need = ctx.needs_input_grad
    d_grad_z = _linear(cotangent, weight, *plan, groups, backend) if need[0] else None
    d_weight = _grad_weight(grad_z, cotangent, *plan, groups, backend) if need[1] else None
    return d_grad_z, d_weight, None, None, None, None, None


def _grad_weight_backward(ctx, cotangent):
    grad_z, x, *plan = ctx.saved_tensors
    groups, backend = ctx.options
    need = ctx.needs_input_grad
    d_grad_z = _linear(x, cotangent, *plan, groups, backend) if need[0] else None
    d_x = _grad_input(grad_z, cotangent, *plan, groups, backend) if need[1] else None
    return d_grad_z, d_x, None, None, None, None, None


def _setup(ctx, inputs, output):
    x, weight, bias, prefix, first_out, mask, groups, activation, _, backend = inputs
    # relu's derivative is read from its output (as torch's relu does), the others' from the kept
    # pre-activation
    activation_input = output[0] if activation == "relu" else output[1]
    ctx.save_for_backward(x, weight, activation_input, prefix, first_out, mask)
    ctx.options = (groups, activation, backend, bias is not None)


def _backward(ctx, grad_out, grad_preactivation):
    x, weight, z, *plan = ctx.saved_tensors
    groups, activation, backend, has_bias = ctx.options
    grad_z = grad_out
    if activation != "none":
        if z.numel() == 0 and grad_out.numel() != 0:
            raise RuntimeError("masked_linear: the pre-activation was not kept for backward")
        if activation == "relu":  # one pass, as torch's own relu backward (z is the output)
            grad_z = torch.ops.aten.threshold_backward(grad_out, z, 0.0)
        else:
            grad_z = grad_out * activation_derivative(activation, z)
        if grad_preactivation is not None and grad_preactivation.numel():
            grad_z = grad_z + grad_preactivation  # a double backward differentiates through z
    need = ctx.needs_input_grad
    grad_x = _grad_input(grad_z, weight, *plan, groups, backend) if need[0] else None
    grad_w = _grad_weight(grad_z, x, *plan, groups, backend) if need[1] else None
    grad_b = grad_z.sum(0) if has_bias and need[2] else None
    return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def _primitive(
    name: str, impl: Callable, fake: Callable, setup: Callable, backward: Callable
) -> Callable:
    """One primitive: ``impl`` as the custom op ``energyflow::name`` (with its fake kernel and
    derivative) and as an autograd Function with the same derivative; the call takes the op
    when compiling, else the Function, or the bare kernel when no graph is recorded (as in a
    first-order backward pass). The Function's forward takes ``ctx``: with a separate
    ``setup_context`` each call would bind its arguments by ``inspect``, tens of microseconds."""
    op = torch.library.custom_op(f"energyflow::{name}", mutates_args=())(impl)
    op.register_fake(fake)
    op.register_autograd(backward, setup_context=setup)

    def forward(ctx, *inputs):
        output = impl(*inputs)
        setup(ctx, inputs, output)
        return output

    function = type(
        name.title().replace("_", ""),
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )

    def call(*args):
        if torch.compiler.is_compiling():
            return op(*args)
        if torch.is_grad_enabled():
            return function.apply(*args)
        return impl(*args)

    return call


_forward = _primitive("masked_linear", _forward_impl, _forward_fake, _setup, _backward)
_grad_input = _primitive(
    "masked_linear_grad_input", _grad_input_impl, _grad_input_fake, _grad_op_setup,
    _grad_input_backward,
)  # fmt: skip
_grad_weight = _primitive(
    "masked_linear_grad_weight", _grad_weight_impl, _grad_weight_fake, _grad_op_setup,
    _grad_weight_backward,
)  # fmt: skip


@torch.library.custom_op("energyflow::masked_linear_rows", mutates_args=())
def _masked_linear_rows_op(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, out_offset: int,
    out_count: int, activation: str,
) -> Tensor:  # fmt: skip
    """Triton only, no gradient: outputs [out_offset, out_offset + out_count) of the layer."""
    out, _ = dispatch.triton_kernels().masked_linear_forward(
        x.contiguous(),
        weight.contiguous(),
        bias,
        prefix,
        activation=activation,
        out_offset=out_offset,
        out_count=out_count,
        acc_dtype=dispatch.accumulation_dtype(x.dtype),
        precision=dispatch.dot_precision(),
    )
    return out


@_masked_linear_rows_op.register_fake
def _masked_linear_rows_fake(x, weight, bias, prefix, out_offset, out_count, activation):
    return x.new_empty(x.shape[0], out_count)


# ---- the functions the layers call -------------------------------------------------------------
def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ---- auto on the CPU: the fastest of the dense product, the strips and the row kernel ---------
STRIPS_MIN_GAIN = 1.05  # the strips run only where the dense product takes this much longer
ROWS_MAX_BATCH = 16  # the row kernel is a candidate for batches of at most this many rows
_AUTO_BACKEND: dict[tuple, str] = {}


def _auto_backend(
    plan: MaskPlan, x: Tensor, has_bias: bool, activation: str, with_gradients: bool
) -> str:
    """The backend that runs this layer fastest on the CPU: ``"reference"`` (torch's dense
    masked product, ``F.linear(x, W * mask, b)`` as nflows / zuko), ``"blocked"`` (the strips;
    a candidate where their cuts are not the dense one) or ``"rows"`` (the extension's row
    kernel; a candidate at up to ``ROWS_MAX_BATCH`` rows of fp32 / fp64). The forward pass (and
    the backward if ``with_gradients``) of each candidate is timed in turn on the whole layer the
    first time a shape, batch bucket, dtype and thread count is met. The strips must beat the
    dense product by ``STRIPS_MIN_GAIN``: timed alone, a strip pass runs with its operands in
    cache and often looks faster than it is inside a network. The choice is kept per key, so a
    layer's later calls cost one dictionary lookup."""
    rows = x.shape[0]
    fixed = masked_strips.fixed_count()
    bucket = masked_strips.batch_bucket(rows)
    key = (plan.out_groups, plan.in_features, bucket, x.dtype, x.device.type,
           torch.get_num_threads(), has_bias, activation, with_gradients, fixed)  # fmt: skip
    choice = _AUTO_BACKEND.get(key)
    if choice is None:
        dense = masked_strips.cuts(plan.flat_groups, plan.in_features, rows, x).dense(
            with_gradients
        )
        if fixed is not None:  # ENERGYFLOW_MASKED_STRIPS: the strips it fixes, nothing timed
            choice = "reference" if dense else "blocked"
        else:
            candidates = ["reference"] + ([] if dense else ["blocked"])
            if bucket <= ROWS_MAX_BATCH and _rows_available(x):
                candidates.append("rows")
            choice = candidates[0]
            if len(candidates) > 1:
                timed_rows = min(bucket, 2 * masked_strips.TIMED_MAX_ROWS)
                choice = _fastest_backend(
                    plan, timed_rows, x, has_bias, activation, with_gradients, candidates
                )
        _AUTO_BACKEND[key] = choice
    return choice


def _rows_available(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and dispatch.cpp_available()
    )


def _fastest_backend(
    plan: MaskPlan, rows: int, like: Tensor, has_bias: bool, activation: str,
    with_gradients: bool, candidates: list[str],
) -> str:  # fmt: skip
    generator = torch.Generator(device=like.device).manual_seed(0)
    options = dict(dtype=like.dtype, device=like.device)
    mask = plan.mask(like.dtype).to(like.device)
    tensors = dict(
        x=torch.randn(rows, plan.in_features, generator=generator, **options),
        weight=torch.randn(plan.out_features, plan.in_features, generator=generator, **options),
        bias=torch.randn(plan.out_features, generator=generator, **options) if has_bias else None,
    )
    for tensor in tensors.values():
        if tensor is not None:
            tensor.requires_grad_(with_gradients)
    seed = torch.randn(rows, plan.out_features, generator=generator, **options)
    prefix, first_out = plan.prefix.to(like.device), plan.first_out.to(like.device)
    keep = activation not in ("none", "relu") and with_gradients

    def layer(backend: str) -> Tensor:
        if backend == "reference":
            x, weight, bias = tensors.values()
            return ACTIVATIONS[activation](F.linear(x, weight * mask, bias))
        args = (prefix, first_out, mask, plan.flat_groups, activation, keep, backend)
        return _forward(*tensors.values(), *args)[0]

    def timed(backend: str) -> Callable[[], None]:
        def run() -> None:
            with torch.set_grad_enabled(with_gradients):
                out = layer(backend)
                if with_gradients:
                    inputs = [t for t in tensors.values() if t is not None]
                    torch.autograd.grad((out * seed).sum(), inputs)

        return run

    times = masked_strips.fastest_in_turn([timed(backend) for backend in candidates], like)
    costs = [t * (STRIPS_MIN_GAIN if b == "blocked" else 1.0) for b, t in zip(candidates, times)]
    return candidates[min(range(len(candidates)), key=costs.__getitem__)]


def masked_linear(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    plan: MaskPlan,
    *,
    prefix: Tensor,
    first_out: Tensor,
    mask: Tensor,
    activation: str = "none",
    backend: str = "blocked",
    choose_fastest: bool = False,
) -> Tensor:
    """act(x (W * mask)^T + b) for x (..., in) -> (..., out); ``backend`` already resolved.

    ``prefix`` / ``first_out`` / ``mask`` are ``plan``'s tensors on x's device (the Triton path
    reads the first two there; the reference multiplies by the mask, as nflows does). With
    ``choose_fastest`` (the ``auto`` backend on the CPU) the blocked backend hands the layer to
    whichever of the dense product, the strips and the row kernel timed fastest on the whole
    layer at first use (``_auto_backend``).
    """
    x, weight, bias = dispatch.autocast_inputs(x, weight, bias)
    if mask.dtype != weight.dtype:  # under autocast
        mask = mask.to(weight.dtype)
    flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if backend == "blocked" and choose_fastest and not torch.compiler.is_compiling():
        backend = _auto_backend(
            plan, flat, bias is not None, activation, _needs_grad(flat, weight, bias)
        )
    if backend == "reference":
        out = ACTIVATIONS[activation](F.linear(flat, weight * mask, bias))
    else:
        keep = activation not in ("none", "relu") and _needs_grad(flat, weight, bias)
        out, _ = _forward(
            flat,
            weight,
            bias,
            prefix,
            first_out,
            mask,
            plan.flat_groups,
            activation,
            keep,
            backend,
        )
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], plan.out_features)


_ACTIVATIONS_IN_PLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda t: t,
    "relu": F.relu_,
    "gelu": lambda t: t.copy_(F.gelu(t)),
    "silu": lambda t: F.silu(t, inplace=True),
    "tanh": torch.tanh_,
    "elu": F.elu_,
}


def masked_linear_level(
    x_prefix: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    plan: MaskPlan,
    level: int,
    *,
    prefix: Tensor,
    activation: str = "none",
    backend: str = "blocked",
    out: Optional[Tensor] = None,
) -> Tensor:
    """Only the outputs at ``level``: act(x[:, :p] W[rows, :p]^T + b[rows]) -> (M, len(rows)).

    ``x_prefix`` (M, >= p) holds at least the inputs those outputs read (p = their prefix), which
    is all that cached stepping has computed so far. Differentiable on every backend (the Triton
    launch is used only when no gradient is needed). ``out`` (M, len(rows)), a view into the
    stepping cache, receives the result (computed in it, without a copy, on the CPU paths when
    no gradient is needed) and is returned.
    """
    start, end, needed = plan.level_group(level)
    if end == start:
        return x_prefix.new_zeros(x_prefix.shape[0], 0) if out is None else out
    x_prefix, weight, bias = dispatch.autocast_inputs(x_prefix, weight, bias)
    no_grad = not _needs_grad(x_prefix, weight, bias)
    if out is not None and no_grad and backend != "triton" and out.dtype == x_prefix.dtype:
        out.addmm_(x_prefix[:, :needed], weight[start:end, :needed].t(), beta=0)
        if bias is not None:
            out.add_(bias[start:end])
        return _ACTIVATIONS_IN_PLACE[activation](out)
    if backend == "triton" and no_grad:
        padded = F.pad(x_prefix[:, :needed], (0, plan.in_features - needed))
        result = _masked_linear_rows_op(
            padded, weight, bias, prefix, start, end - start, activation
        )
    else:
        rows_bias = None if bias is None else bias[start:end]
        result = ACTIVATIONS[activation](
            F.linear(x_prefix[:, :needed], weight[start:end, :needed], rows_bias)
        )
    return result if out is None else out.copy_(result)
