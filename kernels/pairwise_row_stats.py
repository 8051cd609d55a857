"""Row statistics of the pairwise power sums, attention-style (docs/math.md, section 4).

For each batch entry and each row i of X (N, D) against Y (M, D) with weights b (M,):

    rowsum_i = sum_j b_j r_ij^beta
    wdiff_i  = sum_j b_j r_ij^(beta-2) (x_i - y_j) = x_i sum_j w_ij - (W Y)_i    (if WANT_GRAD)

with r_ij^2 = |x_i|^2 + |y_j|^2 - 2 x_i.y_j (the x.y tile on ``tl.dot``), and a term dropped
when r_ij^2 falls under the rounding floor ``floor_rel * (|x_i|^2 + |y_j|^2)`` (exact duplicates:
subgradient 0) or when i = j for the self sum. With ``direct`` (the caller's choice for few
features, where the expansion would waste a padded dot and lose accuracy for close pairs) r_ij^2
and wdiff come from exact differences instead. A program owns BLOCK_N rows
(and, for the gradient, BLOCK_DV feature columns of W Y) and streams BLOCK_M-column tiles of Y
past them: no N x M buffer, no atomics, so results are deterministic. The launcher centres both
sets on the mean of Y first, so the expansion does not cancel for data far from the origin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiling import accumulation, require_contiguous, row_stats_configs

# Relative rounding floor on r^2 for each dot precision (see module docstring).
_R2_FLOOR = {"float64": 2.0**-46, "ieee": 2.0**-20, "tf32": 2.0**-10}


@triton.autotune(configs=row_stats_configs(), key=["n_cols", "dim", "WANT_GRAD", "PRECISION"])
@triton.jit
def _row_stats_kernel(
    x_ptr,
    y_ptr,
    b_ptr,
    x_sq_ptr,
    y_sq_ptr,
    params_ptr,
    rowsum_ptr,
    wdiff_ptr,
    n_rows,
    n_cols,
    dim,
    EXCLUDE_DIAG: tl.constexpr,
    WANT_GRAD: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
    DIRECT: tl.constexpr,
    DIM: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    n_row_tiles = tl.cdiv(n_rows, BLOCK_N)
    pid = tl.program_id(0)
    batch = (pid // n_row_tiles).to(tl.int64)
    rows = (pid % n_row_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    dv_tile = tl.program_id(1)
    dvs = dv_tile * BLOCK_DV + tl.arange(0, BLOCK_DV)
    row_ok = rows < n_rows
    dv_ok = dvs < dim

    x_base = x_ptr + batch * n_rows * dim
    y_base = y_ptr + batch * n_cols * dim
    half_beta = tl.load(params_ptr)
    floor_rel = tl.load(params_ptr + 1)
    x_sq = tl.load(x_sq_ptr + batch * n_rows + rows, mask=row_ok, other=0.0)

    acc_pow = tl.zeros([BLOCK_N], dtype=ACC)
    acc_w = tl.zeros([BLOCK_N], dtype=ACC)
    acc_wy = tl.zeros([BLOCK_N, BLOCK_DV], dtype=ACC)
    for col_start in range(0, n_cols, BLOCK_M):
        cols = col_start + tl.arange(0, BLOCK_M)
        col_ok = cols < n_cols
        valid = row_ok[:, None] & col_ok[None, :]
        if DIRECT:
            # Small D: exact differences, one feature at a time (duplicates give r = 0 exactly).
            r2 = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC)
            for k in tl.static_range(DIM):
                x_k = tl.load(x_base + rows * DIM + k, mask=row_ok, other=0.0).to(ACC)
                y_k = tl.load(y_base + cols * DIM + k, mask=col_ok, other=0.0).to(ACC)
                diff = x_k[:, None] - y_k[None, :]
                r2 += diff * diff
            keep = valid & (r2 > 0.0)
        else:
            dots = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC)
            for k_start in range(0, dim, BLOCK_K):
                ks = k_start + tl.arange(0, BLOCK_K)
                k_ok = ks < dim
                x_tile = tl.load(
                    x_base + rows[:, None] * dim + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0,
                )
                y_tile_t = tl.load(
                    y_base + cols[None, :] * dim + ks[:, None],
                    mask=k_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
                dots = tl.dot(x_tile, y_tile_t, dots, input_precision=PRECISION, out_dtype=ACC)
            y_sq = tl.load(y_sq_ptr + batch * n_cols + cols, mask=col_ok, other=0.0)
            sq_norms = x_sq[:, None] + y_sq[None, :]
            r2 = sq_norms - 2.0 * dots
            keep = valid & (r2 > floor_rel * sq_norms)
        if EXCLUDE_DIAG:
            keep = keep & (rows[:, None] != cols[None, :])
        weights = tl.load(b_ptr + batch * n_cols + cols, mask=col_ok, other=0.0).to(ACC)
        safe_r2 = tl.where(keep, r2, 1.0)
        weighted_pow = tl.where(keep, weights[None, :] * tl.exp2(half_beta * tl.log2(safe_r2)), 0.0)
        acc_pow += tl.sum(weighted_pow, axis=1)
        if WANT_GRAD:
            w = weighted_pow / safe_r2  # b_j r_ij^(beta-2)
            if DIRECT:  # wdiff accumulated as sum_j w_ij (x_i - y_j): no cancellation
                for k in tl.static_range(DIM):
                    x_k = tl.load(x_base + rows * DIM + k, mask=row_ok, other=0.0).to(ACC)
                    y_k = tl.load(y_base + cols * DIM + k, mask=col_ok, other=0.0).to(ACC)
                    part = tl.sum(w * (x_k[:, None] - y_k[None, :]), axis=1)
                    acc_wy += tl.where(dvs[None, :] == k, part[:, None], 0.0)
            else:
                acc_w += tl.sum(w, axis=1)
                y_vals = tl.load(
                    y_base + cols[:, None] * dim + dvs[None, :],
                    mask=col_ok[:, None] & dv_ok[None, :],
                    other=0.0,
                ).to(ACC)
                acc_wy = tl.dot(w, y_vals, acc_wy, input_precision=PRECISION, out_dtype=ACC)

    if dv_tile == 0:
        tl.store(rowsum_ptr + batch * n_rows + rows, acc_pow, mask=row_ok)
    if WANT_GRAD:
        if DIRECT:
            wdiff = acc_wy
        else:
            x_vals = tl.load(
                x_base + rows[:, None] * dim + dvs[None, :],
                mask=row_ok[:, None] & dv_ok[None, :],
                other=0.0,
            ).to(ACC)
            wdiff = x_vals * acc_w[:, None] - acc_wy
        tl.store(
            wdiff_ptr + batch * n_rows * dim + rows[:, None] * dim + dvs[None, :],
            wdiff,
            mask=row_ok[:, None] & dv_ok[None, :],
        )


def _feature_block(dim: int) -> int:
    return min(64, max(16, triton.next_power_of_2(dim)))


def row_stats(
    x: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    *,
    beta: float,
    exclude_diag: bool,
    want_grad: bool,
    acc_dtype: torch.dtype,
    direct: bool,
    precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the row-statistics kernel.

    Args:
        x: (B, N, D), y: (B, M, D), b: (B, M) contiguous; fp16/bf16/fp32/fp64, one device.
        acc_dtype: the accumulation (and output) dtype, fp32 or fp64.
        direct: distances from exact differences instead of the ``tl.dot`` expansion (for few
            features).
        precision: ``"ieee"`` or ``"tf32"`` for the fp32 ``tl.dot`` tiles (fp64 is always ieee).

    Returns:
        rowsum (B, N) and wdiff (B, N, D) (or an empty tensor), in ``acc_dtype``.
    """
    require_contiguous(b=b)
    acc = acc_dtype
    settings = accumulation(acc, precision)
    batch, n_rows, dim = x.shape
    n_cols = y.shape[1]
    # Centring makes new contiguous tensors, so x and y may be any strided view. The centred
    # points stay in the accumulation dtype: rounding them back to fp16/bf16 would move each
    # point by up to 2^-8 of its offset from the centre.
    centre = y.to(acc).mean(dim=1, keepdim=True)
    x_centred = (x.to(acc) - centre).contiguous()
    y_centred = (y.to(acc) - centre).contiguous()
    x_sq = x_centred.square().sum(-1)
    y_sq = y_centred.square().sum(-1)
    floor_key = "float64" if acc == torch.float64 else settings["PRECISION"]
    params = torch.tensor([0.5 * beta, _R2_FLOOR[floor_key]], dtype=acc, device=x.device)
    rowsum = torch.empty((batch, n_rows), dtype=acc, device=x.device)
    wdiff = torch.empty((batch, n_rows, dim) if want_grad else (0,), dtype=acc, device=x.device)
    block_dv = max(2, triton.next_power_of_2(dim)) if direct else _feature_block(dim)
    dv_tiles = triton.cdiv(dim, block_dv) if want_grad else 1

    def grid(meta):
        return (batch * triton.cdiv(n_rows, meta["BLOCK_N"]), dv_tiles)

    _row_stats_kernel[grid](
        x_centred, y_centred, b, x_sq, y_sq, params, rowsum, wdiff,
        n_rows, n_cols, dim,
        EXCLUDE_DIAG=exclude_diag, WANT_GRAD=want_grad, **settings,
        DIRECT=direct, DIM=dim if direct else 0,
        BLOCK_K=_feature_block(dim), BLOCK_DV=block_dv,
    )  # fmt: skip
    return rowsum, wdiff
