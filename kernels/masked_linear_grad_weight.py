"""Block-masked linear layer, weight gradient: grad_W = (dz^T x) * mask, skipping masked tiles.

A program owns a (BLOCK_N outputs) x (BLOCK_K inputs) tile of the weight; if no output of the
tile may read any of its inputs (k0 >= the tile's largest prefix), it writes zeros without
touching the batch. Otherwise it reduces over the batch and zeroes the masked entries.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiling import accumulation, matmul_configs


@triton.autotune(configs=matmul_configs(), key=["n_rows", "out_features", "in_features"])
@triton.jit
def _masked_linear_grad_weight_kernel(
    dz_ptr, x_ptr, prefix_ptr, dw_ptr,
    n_rows, in_features, out_features,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    outs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    out_ok = outs < out_features
    k_ok = ks < in_features
    prefix = tl.load(prefix_ptr + outs, mask=out_ok, other=0)
    tile_reachable = pid_k * BLOCK_K < tl.max(prefix, axis=0)
    m_end = tl.where(tile_reachable, n_rows, 0)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=ACC)
    for m_begin in range(0, m_end, BLOCK_M):
        ms = m_begin + tl.arange(0, BLOCK_M)
        m_ok = ms < n_rows
        dz_tile_t = tl.load(dz_ptr + ms[None, :].to(tl.int64) * out_features + outs[:, None],
                            mask=m_ok[None, :] & out_ok[:, None], other=0.0)
        x_tile = tl.load(x_ptr + ms[:, None].to(tl.int64) * in_features + ks[None, :],
                         mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(dz_tile_t, x_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    acc = tl.where(ks[None, :] < prefix[:, None], acc, 0.0)
    tl.store(dw_ptr + outs[:, None].to(tl.int64) * in_features + ks[None, :],
             acc.to(dw_ptr.dtype.element_ty), mask=out_ok[:, None] & k_ok[None, :])


def masked_linear_grad_weight(
    grad_z: torch.Tensor, x: torch.Tensor, prefix: torch.Tensor, *, precision: str = "ieee"
) -> torch.Tensor:
    """grad_z (M, out), x (M, in), prefix (out,) int32 -> grad_W (out, in), zero where masked."""
    n_rows, out_features = grad_z.shape
    in_features = x.shape[1]
    grad_w = torch.empty((out_features, in_features), dtype=x.dtype, device=x.device)

    def grid(meta):
        return (triton.cdiv(out_features, meta["BLOCK_N"]), triton.cdiv(in_features, meta["BLOCK_K"]))

    _masked_linear_grad_weight_kernel[grid](
        grad_z.contiguous(), x.contiguous(), prefix, grad_w, n_rows, in_features, out_features,
        **accumulation(x.dtype, precision),
    )
    return grad_w
