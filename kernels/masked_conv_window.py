"""Block-masked convolution over a block grid, as an implicit GEMM over the allowed tap window.

    out[b, i, j, o] = bias[o] + sum_{t < TAPS} sum_c x[b, i + di(t), j + dj(t), c] w[t, c, o]
    di(t) = di0 + t // KW,  dj(t) = dj0 + t % KW

on channels-last tensors (rows m = (b H + i) W + j). A program owns a (BLOCK_M rows, BLOCK_N
outputs) tile and runs its K loop over the window's taps only (the masked taps are never read:
the tap window of a vertical layer is 6 of 9 taps of a 3 x 3 kernel, of a horizontal one 2 of 9);
cells shifted off the grid read zeros. The input gradient is the same kernel on the output
gradient with the window flipped and transposed (``energyflow.ops.masked_conv``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_tiles import store_tile, tile_offsets
from .tiling import accumulation, matmul_configs, require_contiguous


@triton.autotune(configs=matmul_configs(), key=["n_rows", "in_channels", "out_channels", "TAPS"])
@triton.jit
def _masked_conv_window_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    n_rows, height, width, in_channels, out_channels, di0, dj0,
    TAPS: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows, row_ok = tile_offsets(0, BLOCK_M, n_rows)
    cols, col_ok = tile_offsets(1, BLOCK_N, out_channels)
    j = rows % width
    i = (rows // width) % height
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for t in range(TAPS):
        di = di0 + t // KW
        dj = dj0 + t % KW
        inside = row_ok & (i + di >= 0) & (i + di < height) & (j + dj >= 0) & (j + dj < width)
        source = tl.where(inside, rows + di * width + dj, 0).to(tl.int64)
        for k_start in range(0, in_channels, BLOCK_K):
            ks = k_start + tl.arange(0, BLOCK_K)
            k_ok = ks < in_channels
            x_tile = tl.load(
                x_ptr + source[:, None] * in_channels + ks[None, :],
                mask=inside[:, None] & k_ok[None, :],
                other=0.0,
            )
            w_tile = tl.load(
                w_ptr + (t * in_channels + ks[:, None]).to(tl.int64) * out_channels + cols[None, :],
                mask=k_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(x_tile, w_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
    store_tile(out_ptr, rows, cols, out_channels, acc, row_ok[:, None] & col_ok[None, :])


def masked_conv_window(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    di0: int,
    dj0: int,
    window_width: int,
    *,
    acc_dtype: torch.dtype,
    precision: str = "ieee",
) -> torch.Tensor:
    """out (B, H, W, out) of x (B, H, W, in) channels-last and the window's weight packed
    (taps, in, out), taps in row-major order over a window ``window_width`` wide whose first tap
    is at offset (di0, dj0). All contiguous; accumulates in ``acc_dtype``."""
    require_contiguous(x=x, weight=weight, bias=bias)
    batch, height, width, in_channels = x.shape
    taps, _, out_channels = weight.shape
    out = torch.empty((batch, height, width, out_channels), dtype=x.dtype, device=x.device)
    n_rows = batch * height * width
    if n_rows == 0:
        return out

    def grid(meta):
        return (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(out_channels, meta["BLOCK_N"]))

    _masked_conv_window_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        n_rows, height, width, in_channels, out_channels, di0, dj0,
        TAPS=taps, KW=window_width, HAS_BIAS=bias is not None,
        **accumulation(acc_dtype, precision),
    )  # fmt: skip
    return out
