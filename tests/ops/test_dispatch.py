"""Backend dispatch: availability reports, "auto" resolution, forced backends, accumulation."""

from __future__ import annotations

import pytest
import torch

import energyflow as ef
from energyflow.ops import dispatch

X, Y = torch.randn(5, 3), torch.randn(4, 3)


def test_backends_report():
    report = ef.backends()
    assert set(report) == {"reference", "cpp", "triton"}
    assert report["reference"] == "available"
    assert all(isinstance(v, str) and v for v in report.values())


def test_forcing_an_unavailable_backend_names_it(monkeypatch):
    kernels = dispatch._load_triton()[0]
    if kernels is not None and not torch.cuda.is_available():
        monkeypatch.setattr(kernels, "INTERPRETED", False)  # as if TRITON_INTERPRET were unset
        with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
            ef.pairwise_power_sum(X, Y, backend="triton")
        with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
            dispatch.resolve_masked("triton", torch.device("cpu"))
        assert "no CUDA device" in ef.backends()["triton"]
    monkeypatch.setitem(dispatch._LOADED, "cpp", (None, "not built (test)"))
    monkeypatch.setitem(dispatch._LOADED, "triton", (None, "no triton (test)"))
    with pytest.raises(ValueError, match="backend='cpp' is unavailable: not built"):
        ef.pairwise_power_sum(X, Y, backend="cpp")
    with pytest.raises(ValueError, match="backend='triton' is unavailable: no triton"):
        ef.pairwise_power_sum(X, Y, backend="triton")
    assert dispatch.resolve_pairwise("auto", torch.device("cpu")) == "reference"
    assert dispatch.resolve_pairwise("auto", torch.device("cuda")) == "reference"
    assert dispatch.resolve_masked("auto", torch.device("cuda")) == "blocked"
    assert ef.backends() == {
        "reference": "available",
        "cpp": "not built (test)",
        "triton": "no triton (test)",
    }


@pytest.mark.parametrize("choices", [dispatch.PAIRWISE_BACKENDS, dispatch.MASKED_BACKENDS])
def test_unknown_backend_lists_the_choices(choices):
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton'"):
        dispatch.check_backend("cuda", choices)


def test_accumulation_dtype_rule():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert dispatch.accumulation_dtype(dtype) == torch.float32
    assert dispatch.accumulation_dtype(torch.float64) == torch.float64
