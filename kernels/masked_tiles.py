"""Tile preamble shared by the three block-masked linear kernels.

Each kernel owns a 2-D tile of its output, picks it from two program ids, and reads row-major
operands in masked 2-D tiles; these helpers say that once.
"""

import triton
import triton.language as tl

# Autotune key of every masked-linear kernel: the problem shape.
AUTOTUNE_KEY = ["n_rows", "out_features", "in_features"]


@triton.jit
def tile_offsets(axis: tl.constexpr, BLOCK: tl.constexpr, limit):
    """Offsets [pid * BLOCK, (pid + 1) * BLOCK) of program axis ``axis``, and which are < limit."""
    offsets = tl.program_id(axis) * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < limit


@triton.jit
def load_tile(ptr, rows, cols, row_stride, mask):
    """ptr[rows[:, None], cols[None, :]] of a row-major matrix (0 where ``mask`` is False)."""
    return tl.load(
        ptr + rows[:, None].to(tl.int64) * row_stride + cols[None, :], mask=mask, other=0.0
    )


@triton.jit
def store_tile(ptr, rows, cols, row_stride, values, mask):
    """ptr[rows[:, None], cols[None, :]] = values (cast to the pointer's type) where ``mask``."""
    offsets = rows[:, None].to(tl.int64) * row_stride + cols[None, :]
    tl.store(ptr + offsets, values.to(ptr.dtype.element_ty), mask=mask)
