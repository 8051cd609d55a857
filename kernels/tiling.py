"""Autotune configurations and accumulation constexprs of every kernel, declared once.

``INTERPRETED`` is the one reading of ``TRITON_INTERPRET`` in the package: triton itself decides
at decoration time whether a kernel is interpreted, so the flag is read when the kernels are
imported. Under the interpreter (NumPy on the CPU) each kernel gets one small tile.
"""

import os

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def accumulation(acc_dtype: torch.dtype, precision: str) -> dict:
    """Constexprs ACC (the accumulation dtype, chosen by the caller) and PRECISION of ``tl.dot``
    (``"ieee"`` or ``"tf32"``; fp64 tiles are always ieee)."""
    if acc_dtype == torch.float64:
        return {"ACC": tl.float64, "PRECISION": "ieee"}
    return {"ACC": tl.float32, "PRECISION": precision}


def matmul_configs() -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) tiles of the masked-linear kernels."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (128, 128, 32, 8, 3),
            (128, 64, 32, 4, 4),
            (64, 128, 32, 4, 4),
            (128, 128, 64, 8, 3),
            (64, 64, 64, 4, 3),
            (256, 128, 32, 8, 3),
        ]
    ]


def row_stats_configs() -> list[triton.Config]:
    """(BLOCK_N rows, BLOCK_M streamed columns) tiles of the pairwise row-statistics kernel."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_N": 16, "BLOCK_M": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_M": bm}, num_warps=w, num_stages=s)
        for bn, bm, w, s in [
            (64, 64, 4, 2),
            (64, 32, 4, 3),
            (128, 64, 8, 2),
            (128, 32, 4, 3),
            (32, 64, 4, 2),
            (64, 128, 8, 2),
        ]
    ]


def require_contiguous(**tensors: torch.Tensor) -> None:
    """Launchers index raw pointers as row-major: refuse strided views instead of copying them
    behind the caller's back (the ops layer makes its copies explicitly)."""
    for name, tensor in tensors.items():
        if tensor is not None and not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() before the launch")
