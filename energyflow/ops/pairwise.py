"""Fused pairwise power sums as ``torch.library`` custom ops with autograd and fake kernels.

Every fused backend implements one primitive, the *row statistics* of X against Y
(docs/math.md, section 4):

    rowsum_i = sum_j b_j r_ij^beta                         (B, N)
    wdiff_i  = sum_j b_j r_ij^(beta - 2) (x_i - y_j)       (B, N, D)   (only when asked for)

with r_ij = ||x_i - y_j|| and every term 0 where r_ij = 0. Then

    S(X, Y; a, b)   = sum_i a_i rowsum_i
    dS/dx_i = beta a_i wdiff_i,  dS/da_i = rowsum_i,  and dS/dy, dS/db from the same pass of Y
    against X with weights a (the column reduction as a row reduction with the roles swapped),
    or, on the C++ paths when both sides need them, from the column side of the same pass
    (``cross_stats``: W^T X next to W Y). A C++ self sum with gradients takes each pair once
    (``self_stats``: the pairs j > i, their terms added to both ends).

No N x M buffer is ever stored (the same trade as FlashAttention): when autograd will need the
gradients, the forward pass computes them with the sums (a row pass gives both), and the backward
pass only scales them. Reductions run in
``dispatch.accumulation_dtype`` (fp32, fp64 for fp64 inputs), and the sums are returned in it,
so that callers combine several of them (the energy distance) without rounding each to fp16.
``cross_power_sum`` / ``self_power_sum`` at the bottom dispatch on the backend name, the
``"reference"`` one included (pure PyTorch, differentiated by torch's autograd).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from energyflow.ops import dispatch, pairwise_reference, second_order, value_range
from energyflow.ops.forward_gradients import FusedFunction, save_forward_gradients

RowStats = Callable[[Tensor, Tensor, Tensor, float, bool, bool], tuple[Tensor, Tensor]]


def cpp_method(dim: int) -> str:
    """The C++ row-statistics method for ``dim`` features (``dispatch.direct_distances``):
    ``"exact"`` (differences, every pair) or ``"gemm"`` (centred dot products on
    register-blocked tiles, the gradient as ``x_i sum_j w_ij - (W Y)_i``, pairs within the
    expansion's rounding of 0 recomputed exactly).

    Example:
        >>> cpp_method(2), cpp_method(64)
        ('exact', 'gemm')
    """
    return "exact" if dispatch.direct_distances(dim) else "gemm"


def _cpp_row_stats(
    x: Tensor, y: Tensor, b: Tensor, beta: float, exclude_diag: bool, want_grad: bool
) -> tuple[Tensor, Tensor]:
    acc = dispatch.accumulation_dtype(x.dtype)
    cpp = dispatch.cpp_module()
    method = cpp_method(x.shape[-1])
    return tuple(
        cpp.row_stats(x.to(acc), y.to(acc), b.to(acc), beta, exclude_diag, want_grad, method)
    )


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
        direct=dispatch.direct_distances(x.shape[-1]),
    )


# The fused implementations of the row statistics, by backend name.
ROW_STATS: dict[str, RowStats] = {"cpp": _cpp_row_stats, "triton": _triton_row_stats}

# The C++ two-sided passes keep per-thread column totals, threads x B x M x (2 + D) doubles;
# above this many bytes they give way to row passes (a cross sum: two; a self sum: one over every
# ordered pair). Memory stays the first concern at large N.
TWO_SIDED_MAX_BYTES = 64 * 2**20


# A self sum's pass over the pairs j > i (``self_stats``) pays for its column totals from about a
# thousand rows on: 1.15-1.25x faster than the row pass over every ordered pair at 1024-4096
# rows, while many small batches (4096 sets of 100 points) ran at half speed.
SELF_ONE_PASS_MIN_ROWS = 1024


def _two_sided(x: Tensor, y: Tensor, backend: str) -> bool:
    """Whether gradients on both sides of a sum of x against y come from one C++ pass that gives
    the columns their terms too (each pair's power computed once)."""
    if backend != "cpp":
        return False
    batch, m, dim = y.shape
    return torch.get_num_threads() * batch * (m + 16) * (2 + dim) * 8 <= TWO_SIDED_MAX_BYTES


def _cpp_cross_stats(
    x: Tensor, y: Tensor, a: Tensor, b: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """rowsum, wdiff of x against y (weights b) and colsum, col_wdiff of y against x (weights a)
    from one pass."""
    acc = dispatch.accumulation_dtype(x.dtype)
    cpp = dispatch.cpp_module()
    method = cpp_method(x.shape[-1])
    return tuple(cpp.cross_stats(x.to(acc), y.to(acc), a.to(acc), b.to(acc), beta, method))


def _cpp_self_stats(y: Tensor, b: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """rowsum, wdiff of y against itself without the diagonal (weights b), each pair's power
    computed once."""
    acc = dispatch.accumulation_dtype(y.dtype)
    cpp = dispatch.cpp_module()
    return tuple(cpp.self_stats(y.to(acc), b.to(acc), beta, cpp_method(y.shape[-1])))


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


def _side(
    points: Tensor,
    others: Tensor,
    weights: Tensor,
    other_weights: Tensor,
    beta: float,
    exclude_diag: bool,
    want_grad: bool,
    backend: str,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One row pass of ``points`` against ``others``: the sum S, and (if ``want_grad``) dS /
    d points = scale beta a_i wdiff_i and dS / d weights = scale rowsum_i (else empty)."""
    rowsum, wdiff = row_stats(points, others, other_weights, beta, exclude_diag, want_grad, backend)
    total = _weighted_total(weights, rowsum)
    if not want_grad:
        return total, rowsum.new_empty(0), rowsum.new_empty(0)
    points_grad = wdiff.mul_((scale * beta) * weights.to(rowsum.dtype)[..., None])  # ours: in place
    return total, points_grad, scale * rowsum


def scaled_outputs(
    k: int, beta: float, total: Tensor, point_grads: tuple[Tensor, ...], weight_grads=()
) -> tuple[Tensor, ...]:
    """A kernel's results on points scaled by 2^k, scaled back (``value_range``): the sum in
    float64 times 2^(-beta k), the point gradients times 2^((1 - beta) k), the weight gradients
    times 2^(-beta k)."""
    return (
        value_range.times_power_of_two(total.to(torch.float64), -beta * k),
        *(value_range.times_power_of_two(g, (1.0 - beta) * k) for g in point_grads),
        *(value_range.times_power_of_two(g, -beta * k) for g in weight_grads),
    )


def _in_range(points: tuple[Tensor, ...], weights: tuple[Tensor, ...], names: str):
    """The exponent k of a call (checking its values) and its points scaled by 2^k in the
    accumulation dtype (unchanged when k = 0)."""
    acc = dispatch.accumulation_dtype(points[0].dtype)
    k = value_range.range_exponent(points, weights, names, acc)
    if k == 0:
        return k, points
    return k, tuple(value_range.times_power_of_two(p.to(acc), k) for p in points)


# The fused sums compute their gradients in the forward pass when autograd will need them (the
# backward pass only scales them by the incoming gradient): the row pass that gives a side's
# gradient gives the sum too, so a training step runs 2 passes for the cross sum and 1 for a
# self sum instead of 1 + 2 and 1 + 1 (the same trade as Liger-Kernel's fused losses). The ops
# check their values and rescale out-of-range points themselves (``value_range``), so the same
# errors and the same finite results hold in eager mode, in compiled graphs and under vmap.
@torch.library.custom_op("energyflow::cross_power_sum", mutates_args=())
def _cross_kernel(
    x: Tensor,
    y: Tensor,
    x_weights: Tensor,
    y_weights: Tensor,
    beta: float,
    grad_x: bool,
    grad_y: bool,
    backend: str,
    names: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> S (B,) in float64, and dS/dx, dS/dy, dS/da, dS/db (those of x and a if ``grad_x``, of
    y and b if ``grad_y``; else empty), in the accumulation dtype. ``names``: the public names
    of x, y and the weights (comma-separated), for the error messages.

    Either side's pass gives S: one pass when only one side needs gradients (the y side when
    neither does), and when both do on the C++ paths (``_two_sided``)."""
    k, (x, y) = _in_range((x, y), (x_weights, y_weights), names)
    if grad_x and grad_y and _two_sided(x, y, backend):
        rowsum, wdiff, colsum, col_wdiff = _cpp_cross_stats(x, y, x_weights, y_weights, beta)
        gx = wdiff.mul_(beta * x_weights.to(rowsum.dtype)[..., None])
        gy = col_wdiff.mul_(beta * y_weights.to(rowsum.dtype)[..., None])
        total = _weighted_total(x_weights, rowsum)
        return scaled_outputs(k, beta, total, (gx, gy), (rowsum, colsum))
    if grad_x:
        total, gx, ga = _side(x, y, x_weights, y_weights, beta, False, True, backend)
    else:
        acc = dispatch.accumulation_dtype(x.dtype)
        gx, ga = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    if grad_y or not grad_x:
        total, gy, gb = _side(y, x, y_weights, x_weights, beta, False, grad_y, backend)
    else:
        gy, gb = total.new_empty(0), total.new_empty(0)
    return scaled_outputs(k, beta, total, (gx, gy), (ga, gb))


@torch.library.custom_op("energyflow::self_power_sum", mutates_args=())
def _self_kernel(
    y: Tensor, y_weights: Tensor, beta: float, grad_y: bool, backend: str, names: str
) -> tuple[Tensor, Tensor, Tensor]:
    """-> S_self (B,) in float64, and dS/dy, dS/db if ``grad_y`` (else empty). Symmetric in
    (i, j): the row statistics serve both ends of every pair, hence the factor 2 on the
    gradients."""
    k, (y,) = _in_range((y,), (y_weights,), names)
    if grad_y and y.shape[-2] >= SELF_ONE_PASS_MIN_ROWS and _two_sided(y, y, backend):
        rowsum, wdiff = _cpp_self_stats(y, y_weights, beta)
        weights = y_weights.to(rowsum.dtype)
        gy = wdiff.mul_((2.0 * beta) * weights[..., None])
        return scaled_outputs(k, beta, _weighted_total(weights, rowsum), (gy,), (2.0 * rowsum,))
    total, gy, gb = _side(y, y, y_weights, y_weights, beta, True, grad_y, backend, scale=2.0)
    return scaled_outputs(k, beta, total, (gy,), (gb,))


def _gradient_fakes(points: Tensor, acc: torch.dtype, wanted: bool) -> tuple[Tensor, Tensor]:
    if not wanted:
        return points.new_empty(0, dtype=acc), points.new_empty(0, dtype=acc)
    return points.new_empty(points.shape, dtype=acc), points.new_empty(points.shape[:2], dtype=acc)


@_cross_kernel.register_fake
def _cross_fake(x, y, x_weights, y_weights, beta, grad_x, grad_y, backend, names):
    acc = dispatch.accumulation_dtype(x.dtype)
    gx, ga = _gradient_fakes(x, acc, grad_x)
    gy, gb = _gradient_fakes(y, acc, grad_y)
    return x.new_empty(x.shape[:1], dtype=torch.float64), gx, gy, ga, gb


@_self_kernel.register_fake
def _self_fake(y, y_weights, beta, grad_y, backend, names):
    acc = dispatch.accumulation_dtype(y.dtype)
    return (y.new_empty(y.shape[:1], dtype=torch.float64), *_gradient_fakes(y, acc, grad_y))


def fold_vmap(op, tensor_count: int):
    """A vmap rule for an op on (B, ...) tensors: the mapped dimension is folded into B (inputs
    without it are expanded), and every non-empty output unfolded again."""

    def rule(info, in_dims, *args):
        size = info.batch_size
        folded = []
        for t, dim in zip(args[:tensor_count], in_dims[:tensor_count]):
            t = t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)
            folded.append(t.reshape(-1, *t.shape[2:]))
        outputs = op(*folded, *args[tensor_count:])
        unfolded = tuple(o.reshape(size, -1, *o.shape[1:]) if o.numel() else o for o in outputs)
        return unfolded, tuple(0 if o.numel() else None for o in outputs)

    return rule


torch.library.register_vmap(_cross_kernel, fold_vmap(_cross_kernel, 4))
torch.library.register_vmap(_self_kernel, fold_vmap(_self_kernel, 2))


def _cross_rule(x, y, a, b, u, v, s, t, *, beta):
    return second_order.cross_second_order(x, y, a, b, beta, u, v, s, t)


def _self_rule(y, b, v, t, *, beta):
    return second_order.self_second_order(y, b, beta, v, t)


class _CrossPowerSum(FusedFunction):
    @staticmethod
    def forward(x, y, x_weights, y_weights, beta, grad_x, grad_y, backend, names):
        return _cross_kernel(x, y, x_weights, y_weights, beta, grad_x, grad_y, backend, names)

    @staticmethod
    def setup_context(ctx, inputs, output):
        save_forward_gradients(ctx, inputs, output, _cross_rule)


class _SelfPowerSum(FusedFunction):
    @staticmethod
    def forward(y, y_weights, beta, grad_y, backend, names):
        return _self_kernel(y, y_weights, beta, grad_y, backend, names)

    @staticmethod
    def setup_context(ctx, inputs, output):
        save_forward_gradients(ctx, inputs, output, _self_rule)


def needs_grad(*tensors: Tensor) -> bool:
    """Whether autograd will ask for a gradient of any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def cross_power_sum(
    x: Tensor,
    y: Tensor,
    x_weights: Tensor,
    y_weights: Tensor,
    beta: float,
    backend: str,
    names: str,
) -> Tensor:
    """S(X, Y; a, b) = sum_ij a_i b_j ||x_i - y_j||^beta on batched inputs.

    x (B, N, D), y (B, M, D), x_weights a (B, N), y_weights b (B, M) -> (B,) in float64;
    ``backend`` is a resolved name (``dispatch.resolve_pairwise``), ``names`` the public names
    of the four inputs for error messages (NaN, inf and negative weights are refused here; see
    ``value_range.range_exponent``).
    """
    if backend == "reference":
        value_range.check_readable((x, y), (x_weights, y_weights), names)
        return pairwise_reference.cross_power_sum(x, y, x_weights, y_weights, beta)
    grad_x, grad_y = needs_grad(x, x_weights), needs_grad(y, y_weights)
    return _CrossPowerSum.call(x, y, x_weights, y_weights, beta, grad_x, grad_y, backend, names)[0]


def self_power_sum(y: Tensor, y_weights: Tensor, beta: float, backend: str, names: str) -> Tensor:
    """S_self(Y; b) = sum_{i != j} b_i b_j ||y_i - y_j||^beta; y (B, M, D), b (B, M) -> (B,)
    in float64."""
    if backend == "reference":
        value_range.check_readable((y,), (y_weights,), names)
        return pairwise_reference.self_power_sum(y, y_weights, beta)
    return _SelfPowerSum.call(y, y_weights, beta, needs_grad(y, y_weights), backend, names)[0]
