"""Autotune configurations of the masked-linear kernels and the accumulation settings of every
kernel, declared once."""
import os

import torch
import triton
import triton.language as tl


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in fp32, or fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulation(dtype: torch.dtype, precision: str) -> dict:
    """Constexprs ACC (see ``accumulation_dtype``) and PRECISION (fp64 is always ieee)."""
    if accumulation_dtype(dtype) == torch.float64:
        return {"ACC": tl.float64, "PRECISION": "ieee"}
    return {"ACC": tl.float32, "PRECISION": precision}


def matmul_configs() -> list[triton.Config]:
    """Tiles for (BLOCK_M, BLOCK_N, BLOCK_K); one small tile under the interpreter (NumPy)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 128, 64, 8, 3),
            (64, 64, 64, 4, 3), (256, 128, 32, 8, 3),
        ]
    ]
