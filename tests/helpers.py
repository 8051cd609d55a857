"""Shared test helpers: which fused backends run here, tolerance checks, level lists."""

from __future__ import annotations

import torch

import energyflow

# Fused pairwise backends available in this run (triton under TRITON_INTERPRET=1, see conftest).
FUSED_BACKENDS = [b for b in ("cpp", "triton") if energyflow.backends()[b].startswith("available")]


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = "", floor: float = 1e-30
) -> None:
    """max |actual - expected| <= rtol * max(|expected|, floor), and no NaN/inf anywhere."""
    assert torch.isfinite(actual).all(), f"{name}: non-finite values {actual}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = expected.abs().max().clamp_min(floor)
    err = (actual.double() - expected.double()).abs().max() / scale
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e}"


def levels(sizes: list[int]) -> list[int]:
    """Sorted unit levels: ``sizes[k]`` units of level k."""
    return [level for level, size in enumerate(sizes) for _ in range(size)]


# Every fused path the kernel tests run: the C++ kernel with each of its methods, and Triton
# (the ``use_path`` fixture in conftest.py forces one).
KERNEL_PATHS = (["cpp-exact", "cpp-gemm"] if "cpp" in FUSED_BACKENDS else []) + (
    ["triton"] if "triton" in FUSED_BACKENDS else []
)
