"""Block-masked linear layer, forward: out = act(x W_masked^T + b), skipping masked tiles.

Output unit o reads only the input prefix [0, prefix[o]) (levels sorted; energyflow.masks), so a
program owning output columns [n0, n0 + BLOCK_N) runs its K loop only up to the largest prefix of
those columns, and masks the weight tile element-wise where a tile straddles a level boundary.
Bias and activation are fused into the epilogue; the pre-activation is stored too when the
backward pass needs it. A window (out_offset, out_count) computes one level slice of the outputs
for cached stepping.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activations import apply_activation
from .tiling import accumulation, matmul_configs


@triton.autotune(configs=matmul_configs(), key=["n_rows", "out_count", "in_features"])
@triton.jit
def _masked_linear_forward_kernel(
    x_ptr, w_ptr, b_ptr, prefix_ptr, out_ptr, z_ptr,
    n_rows, in_features, out_offset, out_count,
    HAS_BIAS: tl.constexpr, STORE_Z: tl.constexpr, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # within the window
    row_ok = rows < n_rows
    col_ok = cols < out_count
    units = out_offset + cols
    prefix = tl.load(prefix_ptr + units, mask=col_ok, other=0)
    k_end = tl.max(prefix, axis=0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k_start in range(0, k_end, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        x_tile = tl.load(x_ptr + rows[:, None].to(tl.int64) * in_features + ks[None, :],
                         mask=row_ok[:, None] & (ks[None, :] < in_features), other=0.0)
        w_tile_t = tl.load(w_ptr + units[None, :].to(tl.int64) * in_features + ks[:, None],
                           mask=(ks[:, None] < prefix[None, :]) & col_ok[None, :], other=0.0)
        acc = tl.dot(x_tile, w_tile_t, acc, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + units, mask=col_ok, other=0.0).to(ACC)[None, :]
    offsets = rows[:, None].to(tl.int64) * out_count + cols[None, :]
    io_mask = row_ok[:, None] & col_ok[None, :]
    if STORE_Z:
        tl.store(z_ptr + offsets, acc.to(z_ptr.dtype.element_ty), mask=io_mask)
    out = apply_activation(acc, ACTIVATION)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=io_mask)


def masked_linear_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, prefix: torch.Tensor, *,
    activation: str = "none", out_offset: int = 0, out_count: int | None = None,
    store_preactivation: bool = False, precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (M, in), weight (out, in), prefix (out,) int32 -> act(x W^T + b)[:, window], and the
    pre-activation of the window if ``store_preactivation``. Window: outputs
    [out_offset, out_offset + out_count) (all by default)."""
    n_rows, in_features = x.shape
    out_count = weight.shape[0] - out_offset if out_count is None else out_count
    out = torch.empty((n_rows, out_count), dtype=x.dtype, device=x.device)
    z = torch.empty_like(out) if store_preactivation else None
    if n_rows == 0 or out_count == 0:
        return out, z

    def grid(meta):
        return (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(out_count, meta["BLOCK_N"]))

    _masked_linear_forward_kernel[grid](
        x.contiguous(), weight.contiguous(), bias if bias is not None else weight, prefix, out,
        z if z is not None else out,
        n_rows, in_features, out_offset, out_count,
        HAS_BIAS=bias is not None, STORE_Z=store_preactivation, ACTIVATION=activation,
        **accumulation(x.dtype, precision),
    )
    return out, z
