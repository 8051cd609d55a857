"""Block-masked linear layer, weight gradient: grad_W = (dz^T x) * mask, skipping masked tiles.

A program owns a (BLOCK_N outputs) x (BLOCK_K inputs) tile of the weight; if no output of the
tile may read any of its inputs (k0 >= the tile's largest prefix), it writes zeros without
touching the batch. Otherwise it reduces over the batch and zeroes the masked entries.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_tiles import AUTOTUNE_KEY, load_tile, store_tile, tile_offsets
from .tiling import accumulation, matmul_configs, require_contiguous


@triton.autotune(configs=matmul_configs(), key=AUTOTUNE_KEY)
@triton.jit
def _masked_linear_grad_weight_kernel(
    dz_ptr, x_ptr, prefix_ptr, dw_ptr,
    n_rows, in_features, out_features,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    outs, out_ok = tile_offsets(0, BLOCK_N, out_features)
    ks, k_ok = tile_offsets(1, BLOCK_K, in_features)
    prefix = tl.load(prefix_ptr + outs, mask=out_ok, other=0)
    tile_reachable = tl.program_id(1) * BLOCK_K < tl.max(prefix, axis=0)
    m_end = tl.where(tile_reachable, n_rows, 0)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=ACC)
    for m_begin in range(0, m_end, BLOCK_M):
        ms = m_begin + tl.arange(0, BLOCK_M)
        m_ok = ms < n_rows
        dz_tile = load_tile(dz_ptr, ms, outs, out_features, m_ok[:, None] & out_ok[None, :])
        x_tile = load_tile(x_ptr, ms, ks, in_features, m_ok[:, None] & k_ok[None, :])
        acc = tl.dot(tl.trans(dz_tile), x_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    acc = tl.where(ks[None, :] < prefix[:, None], acc, 0.0)
    store_tile(dw_ptr, outs, ks, in_features, acc, out_ok[:, None] & k_ok[None, :])


def masked_linear_grad_weight(
    grad_z: torch.Tensor,
    x: torch.Tensor,
    prefix: torch.Tensor,
    *,
    acc_dtype: torch.dtype,
    precision: str = "ieee",
) -> torch.Tensor:
    """grad_z (M, out), x (M, in) contiguous, prefix (out,) int32 -> grad_W (out, in), zero
    where masked."""
    require_contiguous(grad_z=grad_z, x=x)
    n_rows, out_features = grad_z.shape
    in_features = x.shape[1]
    grad_w = torch.empty((out_features, in_features), dtype=x.dtype, device=x.device)

    def grid(meta):
        return (
            triton.cdiv(out_features, meta["BLOCK_N"]),
            triton.cdiv(in_features, meta["BLOCK_K"]),
        )

    _masked_linear_grad_weight_kernel[grid](
        grad_z, x, prefix, grad_w, n_rows, in_features, out_features,
        **accumulation(acc_dtype, precision),
    )  # fmt: skip
    return grad_w
