"""Block-masked linear maps behind autograd: reference, blocked (CPU GEMMs) and Triton paths.

    out = act(x (W * mask)^T + b),   mask[o, i] = 1 iff i < prefix[o]     (energyflow.masks)

``"reference"`` multiplies a dense weight by the mask (what nflows / zuko do). ``"blocked"`` covers
the allowed entries with a few large rectangles (``MaskPlan.tiles``) and runs one GEMM per
rectangle in the forward pass and in both gradients: the zero blocks cost nothing.
``"triton"`` runs kernels that skip the masked tiles, with bias and activation in the epilogue.
All three agree to rounding; the masked weight entries always get a zero gradient.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from energyflow import _backends
from energyflow.masks import MaskPlan

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "elu": F.elu,
}
MASKED_BACKENDS = ("auto", "triton", "blocked", "reference")


def resolve_masked_backend(backend: str, device: torch.device) -> str:
    if backend not in MASKED_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, MASKED_BACKENDS))}; got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _backends.triton_kernels_available() else "blocked"
    if backend == "triton":
        _backends.resolve("triton", device)
    return backend


def _activation_grad(name: str, pre_activation: Tensor, grad_out: Tensor) -> Tensor:
    if name == "none":
        return grad_out
    with torch.enable_grad():
        z = pre_activation.detach().requires_grad_()
        (grad_z,) = torch.autograd.grad(ACTIVATIONS[name](z), z, grad_out)
    return grad_z


class _BlockedLinear(torch.autograd.Function):
    """x (M, in) -> x (W*mask)^T + b with one GEMM per rectangle of ``plan.tiles`` (no activation).

    The tiles cover exactly the allowed entries, so forward, input gradient and weight gradient
    each do the mask's fraction of the dense work, in a few large GEMMs.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], plan: MaskPlan) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.plan = plan
        ctx.has_bias = bias is not None
        if len(plan.out_groups) == 1:  # one level: a plain (prefix-restricted) linear map
            return F.linear(x[:, : plan.out_groups[0][2]], weight[:, : plan.out_groups[0][2]], bias)
        out = x.new_zeros(x.shape[0], plan.out_features) if bias is None else bias.expand(x.shape[0], -1).clone()
        for row_start, row_end, col_start, col_end in plan.tiles:
            out[:, row_start:row_end].addmm_(x[:, col_start:col_end], weight[row_start:row_end, col_start:col_end].t())
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        plan: MaskPlan = ctx.plan
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = x.new_zeros(x.shape)
            for row_start, row_end, col_start, col_end in plan.tiles:
                grad_x[:, col_start:col_end].addmm_(grad_out[:, row_start:row_end], weight[row_start:row_end, col_start:col_end])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            for row_start, row_end, col_start, col_end in plan.tiles:
                torch.mm(grad_out[:, row_start:row_end].t(), x[:, col_start:col_end], out=grad_w[row_start:row_end, col_start:col_end])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b, None


class _TritonMaskedLinear(torch.autograd.Function):
    """The fused Triton path: forward with bias + activation epilogue, tile-skipping gradients."""

    @staticmethod
    def forward(ctx, x, weight, bias, prefix, first_out, activation: str):
        kernels = _backends.triton_kernels()
        precision = _backends.dot_precision()
        keep_z = activation != "none" and any(ctx.needs_input_grad[:3])
        out, z = kernels.masked_linear_forward(
            x, weight, bias, prefix, activation=activation, store_preactivation=keep_z, precision=precision
        )
        ctx.save_for_backward(x, weight, z if keep_z else None, prefix, first_out)
        ctx.options = (activation, precision, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, z, prefix, first_out = ctx.saved_tensors
        activation, precision, has_bias = ctx.options
        kernels = _backends.triton_kernels()
        grad_z = _activation_grad(activation, z, grad_out).contiguous() if z is not None else grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.masked_linear_grad_input(grad_z, weight, first_out, precision=precision)
        if ctx.needs_input_grad[1]:
            grad_w = kernels.masked_linear_grad_weight(grad_z, x, prefix, precision=precision)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_z.sum(0)
        return grad_x, grad_w, grad_b, None, None, None


def masked_linear(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], plan: MaskPlan, *, prefix: Tensor,
    first_out: Tensor, mask: Tensor, activation: str = "none", backend: str = "blocked",
) -> Tensor:
    """act(x (W * mask)^T + b) for x (..., in) -> (..., out); ``backend`` already resolved.

    ``prefix`` / ``first_out`` / ``mask`` are ``plan``'s tensors on x's device (the Triton path
    reads the first two there; the reference multiplies by the mask, as nflows does).
    """
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if backend == "triton":
        out = _TritonMaskedLinear.apply(flat.contiguous(), weight, bias, prefix, first_out, activation)
    else:
        if backend == "blocked":
            out = _BlockedLinear.apply(flat, weight, bias, plan)
        else:
            out = F.linear(flat, weight * mask, bias)
        out = ACTIVATIONS[activation](out)
    return out.reshape(*lead, plan.out_features)


def masked_linear_level(
    x_prefix: Tensor, weight: Tensor, bias: Optional[Tensor], plan: MaskPlan, level: int, *,
    prefix: Tensor, activation: str = "none", backend: str = "blocked",
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
    grad_needed = torch.is_grad_enabled() and (x_prefix.requires_grad or weight.requires_grad)
    if backend == "triton" and not grad_needed:
        padded = x_prefix[:, :needed]
        if padded.shape[1] < plan.in_features:
            padded = F.pad(padded, (0, plan.in_features - padded.shape[1]))
        out, _ = _backends.triton_kernels().masked_linear_forward(
            padded.contiguous(), weight, bias, prefix, activation=activation, out_offset=start,
            out_count=end - start, precision=_backends.dot_precision(),
        )
        return out
    rows_bias = None if bias is None else bias[start:end]
    return ACTIVATIONS[activation](F.linear(x_prefix[:, :needed], weight[start:end, :needed], rows_bias))
