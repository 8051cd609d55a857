"""Shared assertions for the kernel tests."""
from __future__ import annotations

import torch


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = "") -> None:
    """max |actual - expected| <= rtol * max(|expected|, tiny), and no NaN/inf anywhere."""
    assert torch.isfinite(actual).all(), f"{name}: non-finite values {actual}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual.double() - expected.double()).abs().max() / scale
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e}"
