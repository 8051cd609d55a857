"""Block-masked linear layer, forward: out = act(x W_masked^T + b), skipping masked tiles.

Output unit o reads only the input prefix [0, prefix[o]) (levels sorted; energyflow.ops.mask_plan),
so a program owning output columns [n0, n0 + BLOCK_N) runs its K loop only up to the largest
prefix of those columns, and masks the weight tile element-wise where a tile straddles a level
boundary. Bias and activation are fused into the epilogue; the pre-activation is stored too when
the backward pass needs it. A window (out_offset, out_count) computes one level slice of the
outputs for cached stepping.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activations import apply_activation
from .masked_tiles import AUTOTUNE_KEY, load_tile, store_tile, tile_offsets
from .tiling import accumulation, matmul_configs, require_contiguous


@triton.autotune(configs=matmul_configs(), key=[*AUTOTUNE_KEY, "out_count"])
@triton.jit
def _masked_linear_forward_kernel(
    x_ptr, w_ptr, b_ptr, prefix_ptr, out_ptr, z_ptr,
    n_rows, in_features, out_features, out_offset, out_count,
    HAS_BIAS: tl.constexpr, STORE_Z: tl.constexpr, ACTIVATION: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows, row_ok = tile_offsets(0, BLOCK_M, n_rows)
    cols, col_ok = tile_offsets(1, BLOCK_N, out_count)  # within the window
    units = out_offset + cols
    prefix = tl.load(prefix_ptr + units, mask=col_ok, other=0)
    k_end = tl.max(prefix, axis=0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k_start in range(0, k_end, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        x_tile = load_tile(
            x_ptr, rows, ks, in_features, row_ok[:, None] & (ks[None, :] < in_features)
        )
        w_tile = load_tile(
            w_ptr, units, ks, in_features, col_ok[:, None] & (ks[None, :] < prefix[:, None])
        )
        acc = tl.dot(x_tile, tl.trans(w_tile), acc, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + units, mask=col_ok, other=0.0).to(ACC)[None, :]
    io_mask = row_ok[:, None] & col_ok[None, :]
    if STORE_Z:
        store_tile(z_ptr, rows, cols, out_count, acc, io_mask)
    store_tile(out_ptr, rows, cols, out_count, apply_activation(acc, ACTIVATION), io_mask)


def masked_linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    prefix: torch.Tensor,
    *,
    acc_dtype: torch.dtype,
    activation: str = "none",
    out_offset: int = 0,
    out_count: int | None = None,
    store_preactivation: bool = False,
    precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """act(x W^T + b)[:, window] and, if ``store_preactivation``, the window's pre-activation.

    x (M, in) and weight (out, in) contiguous, prefix (out,) int32; window: outputs
    [out_offset, out_offset + out_count) (all by default). Accumulates in ``acc_dtype``.
    """
    require_contiguous(x=x, weight=weight, bias=bias)
    n_rows, in_features = x.shape
    out_features = weight.shape[0]
    out_count = out_features - out_offset if out_count is None else out_count
    out = torch.empty((n_rows, out_count), dtype=x.dtype, device=x.device)
    z = torch.empty_like(out) if store_preactivation else None
    if n_rows == 0 or out_count == 0:
        return out, z

    def grid(meta):
        return (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(out_count, meta["BLOCK_N"]))

    _masked_linear_forward_kernel[grid](
        x, weight, bias if bias is not None else weight, prefix, out, z if z is not None else out,
        n_rows, in_features, out_features, out_offset, out_count,
        HAS_BIAS=bias is not None, STORE_Z=store_preactivation, ACTIVATION=activation,
        **accumulation(acc_dtype, precision),
    )  # fmt: skip
    return out, z
