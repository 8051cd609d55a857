"""Weight gradient of the block-masked convolution, tap by tap (``masked_conv_window``):

    grad_w[t, c, o] = sum_m x[m shifted by tap t, c] grad_out[m, o]

over the rows m whose shifted cell lies on the grid. A program owns a (BLOCK_M inputs,
BLOCK_N outputs) tile of one tap and streams the rows in BLOCK_K chunks; only the window's taps
are computed (the masked ones have no gradient to compute).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_tiles import tile_offsets
from .tiling import accumulation, matmul_configs, require_contiguous


@triton.autotune(configs=matmul_configs(), key=["n_rows", "in_channels", "out_channels"])
@triton.jit
def _masked_conv_grad_weight_kernel(
    x_ptr, g_ptr, out_ptr,
    n_rows, height, width, in_channels, out_channels, di0, dj0,
    KW: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(2)
    di = di0 + t // KW
    dj = dj0 + t % KW
    channels, channel_ok = tile_offsets(0, BLOCK_M, in_channels)
    outs, out_ok = tile_offsets(1, BLOCK_N, out_channels)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for m_start in range(0, n_rows, BLOCK_K):
        rows = m_start + tl.arange(0, BLOCK_K)
        j = rows % width
        i = (rows // width) % height
        inside = (rows < n_rows) & (i + di >= 0) & (i + di < height)
        inside = inside & (j + dj >= 0) & (j + dj < width)
        source = tl.where(inside, rows + di * width + dj, 0).to(tl.int64)
        x_tile = tl.load(  # (BLOCK_M channels, BLOCK_K rows)
            x_ptr + source[None, :] * in_channels + channels[:, None],
            mask=channel_ok[:, None] & inside[None, :],
            other=0.0,
        )
        g_tile = tl.load(  # (BLOCK_K rows, BLOCK_N outputs)
            g_ptr + rows[:, None].to(tl.int64) * out_channels + outs[None, :],
            mask=(rows < n_rows)[:, None] & out_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(x_tile, g_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    offsets = (t * in_channels + channels[:, None]).to(tl.int64) * out_channels + outs[None, :]
    tl.store(
        out_ptr + offsets,
        acc.to(out_ptr.dtype.element_ty),
        mask=channel_ok[:, None] & out_ok[None, :],
    )


def masked_conv_grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    di0: int,
    dj0: int,
    window_height: int,
    window_width: int,
    *,
    acc_dtype: torch.dtype,
    precision: str = "ieee",
) -> torch.Tensor:
    """grad_w (taps, in, out) of x (B, H, W, in) and grad_out (B, H, W, out), channels-last and
    contiguous, for the window of ``window_height`` x ``window_width`` taps at (di0, dj0)."""
    require_contiguous(x=x, grad_out=grad_out)
    batch, height, width, in_channels = x.shape
    out_channels = grad_out.shape[-1]
    taps = window_height * window_width
    out = torch.zeros((taps, in_channels, out_channels), dtype=x.dtype, device=x.device)
    n_rows = batch * height * width
    if n_rows == 0:
        return out

    def grid(meta):
        return (
            triton.cdiv(in_channels, meta["BLOCK_M"]),
            triton.cdiv(out_channels, meta["BLOCK_N"]),
            taps,
        )

    _masked_conv_grad_weight_kernel[grid](
        x, grad_out, out, n_rows, height, width, in_channels, out_channels, di0, dj0,
        KW=window_width, **accumulation(acc_dtype, precision),
    )  # fmt: skip
    return out
