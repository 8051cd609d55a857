"""Block-masked linear maps as ``torch.library`` custom ops (docs/math.md, section 6).

    out = act(x (W * mask)^T + b),   mask[o, i] = 1 iff i < prefix[o]     (ops.mask_plan)

Backends (``dispatch.MASKED_BACKENDS``):

- ``"blocked"`` covers the allowed entries with a few large rectangles (``MaskPlan.tiles``) and
  runs one GEMM per rectangle in the forward pass and in both gradients: the zero blocks cost
  nothing (CPU default).
- ``"triton"`` runs kernels that skip the masked tiles, with bias and activation in the
  epilogue (CUDA default).
- ``"reference"`` multiplies a dense weight by the mask (what nflows / zuko do), differentiated
  by torch's autograd: the correctness oracle.

The fused backends sit in one table, ``MASKED_LINEAR``, behind three custom ops (forward with
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

from energyflow.ops import dispatch
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


def _rectangles(flat_tiles: list[int]) -> list[tuple[int, int, int, int]]:
    return [tuple(flat_tiles[i : i + 4]) for i in range(0, len(flat_tiles), 4)]  # type: ignore[misc]


def _common_prefix(tiles: list[int], out_features: int) -> Optional[int]:
    """The input prefix every output reads when the mask is one rectangle over all rows (then
    the layer is a plain linear map on that prefix), else None."""
    if len(tiles) == 4 and tiles[0] == 0 and tiles[1] == out_features and tiles[2] == 0:
        return tiles[3]
    return None


# ---- blocked: one GEMM per rectangle of the staircase -----------------------------------------
def _blocked_forward(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, tiles: list[int],
    activation: str, keep_preactivation: bool,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    prefix_all = _common_prefix(tiles, weight.shape[0])
    if prefix_all is not None:
        z = F.linear(x[:, :prefix_all], weight[:, :prefix_all], bias)
    else:
        rows = (x.shape[0], weight.shape[0])
        z = x.new_zeros(rows) if bias is None else bias.expand(rows).clone()
        for row_start, row_end, col_start, col_end in _rectangles(tiles):
            z[:, row_start:row_end].addmm_(
                x[:, col_start:col_end], weight[row_start:row_end, col_start:col_end].t()
            )
    if activation == "none":
        return z, None
    return ACTIVATIONS[activation](z), z if keep_preactivation else None


def _blocked_grad_input(
    grad_z: Tensor, weight: Tensor, first_out: Tensor, tiles: list[int]
) -> Tensor:
    prefix_all = _common_prefix(tiles, weight.shape[0])
    if prefix_all is not None:
        return F.pad(grad_z.mm(weight[:, :prefix_all]), (0, weight.shape[1] - prefix_all))
    grad_x = grad_z.new_zeros(grad_z.shape[0], weight.shape[1])
    for row_start, row_end, col_start, col_end in _rectangles(tiles):
        grad_x[:, col_start:col_end].addmm_(
            grad_z[:, row_start:row_end], weight[row_start:row_end, col_start:col_end]
        )
    return grad_x


def _blocked_grad_weight(grad_z: Tensor, x: Tensor, prefix: Tensor, tiles: list[int]) -> Tensor:
    prefix_all = _common_prefix(tiles, grad_z.shape[1])
    if prefix_all is not None:
        return F.pad(grad_z.t().mm(x[:, :prefix_all]), (0, x.shape[1] - prefix_all))
    grad_w = x.new_zeros(grad_z.shape[1], x.shape[1])
    for row_start, row_end, col_start, col_end in _rectangles(tiles):
        torch.mm(
            grad_z[:, row_start:row_end].t(),
            x[:, col_start:col_end],
            out=grad_w[row_start:row_end, col_start:col_end],
        )
    return grad_w


# ---- triton: tile-skipping kernels ------------------------------------------------------------
def _triton_forward(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, tiles: list[int],
    activation: str, keep_preactivation: bool,
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
    grad_z: Tensor, weight: Tensor, first_out: Tensor, tiles: list[int]
) -> Tensor:
    return dispatch.triton_kernels().masked_linear_grad_input(
        grad_z.contiguous(),
        weight.contiguous(),
        first_out,
        acc_dtype=dispatch.accumulation_dtype(grad_z.dtype),
        precision=dispatch.dot_precision(),
    )


def _triton_grad_weight(grad_z: Tensor, x: Tensor, prefix: Tensor, tiles: list[int]) -> Tensor:
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
    grad_input: Callable[[Tensor, Tensor, Tensor, list[int]], Tensor]
    grad_weight: Callable[[Tensor, Tensor, Tensor, list[int]], Tensor]


MASKED_LINEAR: dict[str, MaskedLinearKernels] = {
    "blocked": MaskedLinearKernels(_blocked_forward, _blocked_grad_input, _blocked_grad_weight),
    "triton": MaskedLinearKernels(_triton_forward, _triton_grad_input, _triton_grad_weight),
}


# ---- custom ops ------------------------------------------------------------------------------
@torch.library.custom_op("energyflow::masked_linear", mutates_args=())
def _masked_linear_op(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], prefix: Tensor, first_out: Tensor,
    tiles: list[int], activation: str, keep_preactivation: bool, backend: str,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """x (M, in) -> act(x (W*mask)^T + b) (M, out), and the pre-activation (M, out) if kept
    (else an empty tensor)."""
    out, z = MASKED_LINEAR[backend].forward(
        x, weight, bias, prefix, tiles, activation, keep_preactivation
    )
    return out, z if z is not None else x.new_empty(0)


@_masked_linear_op.register_fake
def _masked_linear_fake(x, weight, bias, prefix, first_out, tiles, activation, keep, backend):
    out = x.new_empty(x.shape[0], weight.shape[0])
    return out, x.new_empty(out.shape if keep else (0,))


@torch.library.custom_op("energyflow::masked_linear_grad_input", mutates_args=())
def _grad_input_op(
    grad_z: Tensor, weight: Tensor, prefix: Tensor, first_out: Tensor, tiles: list[int],
    backend: str,
) -> Tensor:  # fmt: skip
    """grad_z (M, out) -> grad_x = grad_z (W*mask) (M, in)."""
    return MASKED_LINEAR[backend].grad_input(grad_z, weight, first_out, tiles)


@_grad_input_op.register_fake
def _grad_input_fake(grad_z, weight, prefix, first_out, tiles, backend):
    return grad_z.new_empty(grad_z.shape[0], weight.shape[1])


@torch.library.custom_op("energyflow::masked_linear_grad_weight", mutates_args=())
def _grad_weight_op(
    grad_z: Tensor, x: Tensor, prefix: Tensor, first_out: Tensor, tiles: list[int], backend: str
) -> Tensor:
    """grad_z (M, out), x (M, in) -> grad_W = (grad_z^T x) * mask (out, in)."""
    return MASKED_LINEAR[backend].grad_weight(grad_z, x, prefix, tiles)


@_grad_weight_op.register_fake
def _grad_weight_fake(grad_z, x, prefix, first_out, tiles, backend):
    return x.new_empty(grad_z.shape[1], x.shape[1])


def _linear(x: Tensor, weight: Tensor, prefix: Tensor, first_out: Tensor, tiles, backend):
    """x (W*mask)^T, differentiable (no bias, no activation)."""
    return _masked_linear_op(x, weight, None, prefix, first_out, tiles, "none", False, backend)[0]


def _grad_op_setup(ctx, inputs, output):
    left, right, prefix, first_out, tiles, backend = inputs
    ctx.save_for_backward(left, right, prefix, first_out)
    ctx.options = (tiles, backend)


# Both gradients are bilinear maps made of the layer's own masked products, so their derivatives
# are too: double (and higher) backward reuse the three ops.
def _grad_input_backward(ctx, cotangent):
    grad_z, weight, prefix, first_out = ctx.saved_tensors
    tiles, backend = ctx.options
    need = ctx.needs_input_grad
    d_grad_z = _linear(cotangent, weight, prefix, first_out, tiles, backend) if need[0] else None
    d_weight = (
        _grad_weight_op(grad_z, cotangent, prefix, first_out, tiles, backend) if need[1] else None
    )
    return d_grad_z, d_weight, None, None, None, None


def _grad_weight_backward(ctx, cotangent):
    grad_z, x, prefix, first_out = ctx.saved_tensors
    tiles, backend = ctx.options
    need = ctx.needs_input_grad
    d_grad_z = _linear(x, cotangent, prefix, first_out, tiles, backend) if need[0] else None
    d_x = _grad_input_op(grad_z, cotangent, prefix, first_out, tiles, backend) if need[1] else None
    return d_grad_z, d_x, None, None, None, None


_grad_input_op.register_autograd(_grad_input_backward, setup_context=_grad_op_setup)
_grad_weight_op.register_autograd(_grad_weight_backward, setup_context=_grad_op_setup)


def _setup(ctx, inputs, output):
    x, weight, bias, prefix, first_out, tiles, activation, _, backend = inputs
    ctx.save_for_backward(x, weight, output[1], prefix, first_out)
    ctx.options = (tiles, activation, backend, bias is not None)


def _backward(ctx, grad_out, grad_preactivation):
    x, weight, z, prefix, first_out = ctx.saved_tensors
    tiles, activation, backend, has_bias = ctx.options
    grad_z = grad_out
    if activation != "none":
        if z.numel() == 0 and grad_out.numel() != 0:
            raise RuntimeError("masked_linear: the pre-activation was not kept for backward")
        if activation == "relu":  # one pass, as torch's own relu backward
            grad_z = torch.ops.aten.threshold_backward(grad_out, z, 0.0)
        else:
            grad_z = grad_out * activation_derivative(activation, z)
        if grad_preactivation is not None and grad_preactivation.numel():
            grad_z = grad_z + grad_preactivation  # a double backward differentiates through z
    need = ctx.needs_input_grad
    grad_x = _grad_input_op(grad_z, weight, prefix, first_out, tiles, backend) if need[0] else None
    grad_w = _grad_weight_op(grad_z, x, prefix, first_out, tiles, backend) if need[1] else None
    grad_b = grad_z.sum(0) if has_bias and need[2] else None
    return grad_x, grad_w, grad_b, None, None, None, None, None, None


_masked_linear_op.register_autograd(_backward, setup_context=_setup)


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


def _autocast_inputs(
    x: Tensor, weight: Tensor, bias: Optional[Tensor]
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Under autocast, all three in the autocast dtype (torch autocasts its own ops, such as
    F.linear, but not custom ones); otherwise unchanged."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


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
) -> Tensor:
    """act(x (W * mask)^T + b) for x (..., in) -> (..., out); ``backend`` already resolved.

    ``prefix`` / ``first_out`` / ``mask`` are ``plan``'s tensors on x's device (the Triton path
    reads the first two there; the reference multiplies by the mask, as nflows does).
    """
    x, weight, bias = _autocast_inputs(x, weight, bias)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if backend == "reference":
        out = ACTIVATIONS[activation](F.linear(flat, weight * mask, bias))
    else:
        keep = activation != "none" and _needs_grad(flat, weight, bias)
        out, _ = _masked_linear_op(
            flat, weight, bias, prefix, first_out, plan.flat_tiles, activation, keep, backend
        )
    return out.reshape(*lead, plan.out_features)


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
) -> Tensor:
    """Only the outputs at ``level``: act(x[:, :p] W[rows, :p]^T + b[rows]) -> (M, len(rows)).

    ``x_prefix`` (M, >= p) holds at least the inputs those outputs read (p = their prefix), which
    is all that cached stepping has computed so far. Differentiable on every backend (the Triton
    launch is used only when no gradient is needed).
    """
    start, end = plan.level_rows(level)
    if end == start:
        return x_prefix.new_zeros(x_prefix.shape[0], 0)
    needed = int(plan.prefix[end - 1])
    x_prefix, weight, bias = _autocast_inputs(x_prefix, weight, bias)
    if backend == "triton" and not _needs_grad(x_prefix, weight, bias):
        padded = F.pad(x_prefix[:, :needed], (0, plan.in_features - needed))
        return _masked_linear_rows_op(padded, weight, bias, prefix, start, end - start, activation)
    rows_bias = None if bias is None else bias[start:end]
    linear = F.linear(x_prefix[:, :needed], weight[start:end, :needed], rows_bias)
    return ACTIVATIONS[activation](linear)
