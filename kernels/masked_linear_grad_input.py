"""Block-masked linear layer, input gradient: grad_x = dz W_masked, skipping masked tiles.

Input k is read only by outputs [first_out[k], out_features) (a suffix), so a program owning
input columns [k0, k0 + BLOCK_K) starts its loop over outputs at the smallest first_out of its
columns and masks straddling tiles element-wise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_tiles import AUTOTUNE_KEY, load_tile, store_tile, tile_offsets
from .tiling import accumulation, matmul_configs, require_contiguous


@triton.autotune(configs=matmul_configs(), key=AUTOTUNE_KEY)
@triton.jit
def _masked_linear_grad_input_kernel(
    dz_ptr, w_ptr, first_out_ptr, dx_ptr,
    n_rows, in_features, out_features,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows, row_ok = tile_offsets(0, BLOCK_M, n_rows)
    ks, k_ok = tile_offsets(1, BLOCK_K, in_features)
    first = tl.load(first_out_ptr + ks, mask=k_ok, other=out_features)
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
    for n_begin in range(tl.min(first, axis=0), out_features, BLOCK_N):
        ns = n_begin + tl.arange(0, BLOCK_N)
        n_ok = ns < out_features
        dz_tile = load_tile(dz_ptr, rows, ns, out_features, row_ok[:, None] & n_ok[None, :])
        w_mask = (ns[:, None] >= first[None, :]) & n_ok[:, None] & k_ok[None, :]
        w_tile = load_tile(w_ptr, ns, ks, in_features, w_mask)
        acc = tl.dot(dz_tile, w_tile, acc, input_precision=PRECISION, out_dtype=ACC)
    store_tile(dx_ptr, rows, ks, in_features, acc, row_ok[:, None] & k_ok[None, :])


def masked_linear_grad_input(
    grad_z: torch.Tensor,
    weight: torch.Tensor,
    first_out: torch.Tensor,
    *,
    acc_dtype: torch.dtype,
    precision: str = "ieee",
) -> torch.Tensor:
    """grad_z (M, out), weight (out, in) contiguous, first_out (in,) int32 -> grad_x (M, in)."""
    require_contiguous(grad_z=grad_z, weight=weight)
    n_rows, out_features = grad_z.shape
    in_features = weight.shape[1]
    grad_x = torch.empty((n_rows, in_features), dtype=grad_z.dtype, device=grad_z.device)
    if n_rows == 0:
        return grad_x

    def grid(meta):
        return (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(in_features, meta["BLOCK_K"]))

    _masked_linear_grad_input_kernel[grid](
        grad_z, weight, first_out, grad_x, n_rows, in_features, out_features,
        **accumulation(acc_dtype, precision),
    )  # fmt: skip
    return grad_x
