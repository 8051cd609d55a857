"""Fixtures: a fresh, reproducible seed for each test, and ``use_path`` to force a kernel path.
Shared helpers live in ``helpers.py`` (nothing is imported from here); the interpreter flag for
Triton is set by the root ``conftest.py``."""

import zlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A fresh, reproducible seed per test (derived from its id)."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture
def use_path(monkeypatch):
    """``use_path(path)`` forces a kernel path for the test and returns its backend name."""

    def select(path: str) -> str:
        if path.startswith("cpp-"):
            from energyflow.ops import dispatch

            max_direct = 0 if path == "cpp-gemm" else 10**9
            monkeypatch.setattr(dispatch, "DIRECT_DISTANCE_MAX_DIM", max_direct)
            return "cpp"
        return path

    return select


@pytest.fixture
def small_reports(monkeypatch):
    """The commands' reports judge 500 held-out rows (and a KDE of 1000 samples) instead of
    5000: the judges have tests of their own, these check what the commands do with them."""
    from energyflow.cli import report

    monkeypatch.setattr(report, "REPORT_ROWS", 500)
    monkeypatch.setattr(report, "KDE_SAMPLES", 1000)
