"""Block-masked linear layer, input gradient: grad_x = dz W_masked, skipping masked tiles.

Input k is read only by outputs [first_out[k], out_features) (a suffix), so a program owning
input columns [k0, k0 + BLOCK_K) starts its loop over outputs at the smallest first_out of its
columns and masks straddling tiles element-wise.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiling import accumulation, matmul_configs


@triton.autotune(configs=matmul_configs(), key=["n_rows", "out_features", "in_features"])
@triton.jit
def _masked_linear_grad_input_kernel(
    dz_ptr, w_ptr, first_out_ptr, dx_ptr,
    n_rows, in_features, out_features,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < n_rows
    k_ok = ks < in_features
    first = tl.load(first_out_ptr + ks, mask=k_ok, other=out_features)
    n_start = tl.min(first, axis=0)
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
    for n_begin in range(n_start, out_features, BLOCK_N):
        ns = n_begin + tl.arange(0, BLOCK_N)
        n_ok = ns < out_features
        dz_tile = tl.load(dz_ptr + rows[:, None].to(tl.int64) * out_features + ns[None, :],
                          mask=row_ok[:, None] & n_ok[None, :], other=0.0)
        w_tile = tl.load(w_ptr + ns[:, None].to(tl.int64) * in_features + ks[None, :],
                         mask=(ns[:, None] >= first[None, :]) & n_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(dz_tile, w_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    tl.store(dx_ptr + rows[:, None].to(tl.int64) * in_features + ks[None, :],
             acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & k_ok[None, :])


def masked_linear_grad_input(
    grad_z: torch.Tensor, weight: torch.Tensor, first_out: torch.Tensor, *, precision: str = "ieee"
) -> torch.Tensor:
    """grad_z (M, out), weight (out, in), first_out (in,) int32 -> grad_x (M, in)."""
    n_rows, out_features = grad_z.shape
    in_features = weight.shape[1]
    grad_x = torch.empty((n_rows, in_features), dtype=grad_z.dtype, device=grad_z.device)
    if n_rows == 0:
        return grad_x

    def grid(meta):
        return (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(in_features, meta["BLOCK_K"]))

    _masked_linear_grad_input_kernel[grid](
        grad_z.contiguous(), weight.contiguous(), first_out, grad_x, n_rows, in_features, out_features,
        **accumulation(grad_z.dtype, precision),
    )
    return grad_x
