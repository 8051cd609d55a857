"""Shared test helpers: which fused backends run here, tolerance checks, level lists."""

from __future__ import annotations

import torch

import energyflow

# Fused pairwise backends available in this run (triton under TRITON_INTERPRET=1, see conftest).
FUSED_BACKENDS = [b for b in ("cpp", "triton") if energyflow.backends()[b].startswith("available")]


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = ""
) -> None:
    """max |actual - expected| <= rtol * max(|expected|, tiny), and no NaN/inf anywhere."""
    assert torch.isfinite(actual).all(), f"{name}: non-finite values {actual}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual.double() - expected.double()).abs().max() / scale
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e}"


def levels(sizes: list[int]) -> list[int]:
    """Sorted unit levels: ``sizes[k]`` units of level k."""
    return [level for level, size in enumerate(sizes) for _ in range(size)]
