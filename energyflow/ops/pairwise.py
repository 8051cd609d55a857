"""Fused pairwise power sums as ``torch.library`` custom ops with autograd and fake kernels.

Every fused backend implements one primitive, the *row statistics* of X against Y
(docs/math.md, section 4):

    rowsum_i = sum_j b_j r_ij^beta                         (B, N)
    wdiff_i  = sum_j b_j r_ij^(beta - 2) (x_i - y_j)       (B, N, D)   (only when asked for)

with r_ij = ||x_i - y_j|| and every term 0 where r_ij = 0. Then

    S(X, Y; a, b)   = sum_i a_i rowsum_i
    dS/dx_i = beta a_i wdiff_i,  dS/da_i = rowsum_i,  and dS/dy, dS/db from the same pass of Y
    against X with weights a (the column reduction as a row reduction with the roles swapped).

The forward pass computes only ``rowsum``; the backward pass recomputes the distances (no N x M
buffer is ever stored, the same trade as FlashAttention). Reductions run in
``dispatch.accumulation_dtype`` (fp32, fp64 for fp64 inputs); the ops return the input dtype.
``cross_power_sum`` / ``self_power_sum`` at the bottom dispatch on the backend name, the
``"reference"`` one included (pure PyTorch, differentiated by torch's autograd).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from energyflow.ops import dispatch, pairwise_reference

RowStats = Callable[[Tensor, Tensor, Tensor, float, bool, bool], tuple[Tensor, Tensor]]


def _cpp_row_stats(
    x: Tensor, y: Tensor, b: Tensor, beta: float, exclude_diag: bool, want_grad: bool
) -> tuple[Tensor, Tensor]:
    acc = dispatch.accumulation_dtype(x.dtype)
    cpp = dispatch.cpp_module()
    return tuple(cpp.row_stats(x.to(acc), y.to(acc), b.to(acc), beta, exclude_diag, want_grad))


def _triton_row_stats(
    x: Tensor, y: Tensor, b: Tensor, beta: float, exclude_diag: bool, want_grad: bool
) -> tuple[Tensor, Tensor]:
    return dispatch.triton_kernels().row_stats(
        x,
        y,
        b.contiguous(),
        beta=beta,
        exclude_diag=exclude_diag,
        want_grad=want_grad,
        acc_dtype=dispatch.accumulation_dtype(x.dtype),
        precision=dispatch.dot_precision(),
    )


# The fused implementations of the row statistics, by backend name.
ROW_STATS: dict[str, RowStats] = {"cpp": _cpp_row_stats, "triton": _triton_row_stats}


@torch.library.custom_op("energyflow::row_stats", mutates_args=())
def row_stats(
    x: Tensor,
    y: Tensor,
    b: Tensor,
    beta: float,
    exclude_diag: bool,
    want_grad: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """x (B, N, D), y (B, M, D), b (B, M) -> rowsum (B, N), wdiff (B, N, D) or (0,).

    Outputs are in the accumulation dtype. The Triton tiles use tf32 for fp32 inputs when
    ``torch.get_float32_matmul_precision()`` is not "highest", read at run time (so a compiled
    graph follows the current setting).
    """
    return ROW_STATS[backend](x, y, b, beta, exclude_diag, want_grad)


@row_stats.register_fake
def _row_stats_fake(x, y, b, beta, exclude_diag, want_grad, backend):
    acc = dispatch.accumulation_dtype(x.dtype)
    rowsum = x.new_empty(x.shape[:2], dtype=acc)
    wdiff = x.new_empty(x.shape if want_grad else (0,), dtype=acc)
    return rowsum, wdiff


def _weighted_total(weights: Tensor, rowsum: Tensor) -> Tensor:
    return (weights.to(rowsum.dtype) * rowsum).sum(-1)


@torch.library.custom_op("energyflow::cross_power_sum", mutates_args=())
def _fused_cross_power_sum(
    x: Tensor, y: Tensor, x_weights: Tensor, y_weights: Tensor, beta: float, backend: str
) -> Tensor:
    rowsum, _ = row_stats(x, y, y_weights, beta, False, False, backend)
    return _weighted_total(x_weights, rowsum).to(x.dtype)


@torch.library.custom_op("energyflow::self_power_sum", mutates_args=())
def _fused_self_power_sum(y: Tensor, y_weights: Tensor, beta: float, backend: str) -> Tensor:
    rowsum, _ = row_stats(y, y, y_weights, beta, True, False, backend)
    return _weighted_total(y_weights, rowsum).to(y.dtype)


@_fused_cross_power_sum.register_fake
def _cross_fake(x, y, x_weights, y_weights, beta, backend):
    return x.new_empty(x.shape[:1])


@_fused_self_power_sum.register_fake
def _self_fake(y, y_weights, beta, backend):
    return y.new_empty(y.shape[:1])


def _side_grads(
    grad: Tensor,
    points: Tensor,
    others: Tensor,
    weights: Tensor,
    other_weights: Tensor,
    beta: float,
    exclude_diag: bool,
    need_points: bool,
    need_weights: bool,
    backend: str,
    scale: float = 1.0,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradients of grad * S with respect to one side's points and weights (one pass)."""
    if not (need_points or need_weights):
        return None, None
    rowsum, wdiff = row_stats(
        points, others, other_weights, beta, exclude_diag, need_points, backend
    )
    g = grad.to(rowsum.dtype)[:, None] * scale
    points_grad = weights_grad = None
    if need_points:
        points_grad = ((g * beta * weights.to(rowsum.dtype))[..., None] * wdiff).to(points.dtype)
    if need_weights:
        weights_grad = (g * rowsum).to(weights.dtype)
    return points_grad, weights_grad


def _cross_setup(ctx, inputs, output):
    x, y, x_weights, y_weights, beta, backend = inputs
    ctx.save_for_backward(x, y, x_weights, y_weights)
    ctx.options = (beta, backend)


def _cross_backward(ctx, grad):
    x, y, a, b = ctx.saved_tensors
    beta, backend = ctx.options
    need = ctx.needs_input_grad
    gx, ga = _side_grads(grad, x, y, a, b, beta, False, need[0], need[2], backend)
    gy, gb = _side_grads(grad, y, x, b, a, beta, False, need[1], need[3], backend)
    return gx, gy, ga, gb, None, None


def _self_setup(ctx, inputs, output):
    y, y_weights, beta, backend = inputs
    ctx.save_for_backward(y, y_weights)
    ctx.options = (beta, backend)


def _self_backward(ctx, grad):
    y, b = ctx.saved_tensors
    beta, backend = ctx.options
    need = ctx.needs_input_grad
    # Symmetric in (i, j): the row pass serves both ends of every pair, hence the factor 2.
    gy, gb = _side_grads(grad, y, y, b, b, beta, True, need[0], need[1], backend, scale=2.0)
    return gy, gb, None, None


_fused_cross_power_sum.register_autograd(_cross_backward, setup_context=_cross_setup)
_fused_self_power_sum.register_autograd(_self_backward, setup_context=_self_setup)


def cross_power_sum(
    x: Tensor, y: Tensor, x_weights: Tensor, y_weights: Tensor, beta: float, backend: str
) -> Tensor:
    """S(X, Y; a, b) = sum_ij a_i b_j ||x_i - y_j||^beta on validated batched inputs.

    x (B, N, D), y (B, M, D), x_weights a (B, N), y_weights b (B, M) -> (B,); ``backend`` is a
    resolved name (``dispatch.resolve_pairwise``).
    """
    if backend == "reference":
        return pairwise_reference.cross_power_sum(x, y, x_weights, y_weights, beta)
    return _fused_cross_power_sum(x, y, x_weights, y_weights, beta, backend)


def self_power_sum(y: Tensor, y_weights: Tensor, beta: float, backend: str) -> Tensor:
    """S_self(Y; b) = sum_{i != j} b_i b_j ||y_i - y_j||^beta; y (B, M, D), b (B, M) -> (B,)."""
    if backend == "reference":
        return pairwise_reference.self_power_sum(y, y_weights, beta)
    return _fused_self_power_sum(y, y_weights, beta, backend)
