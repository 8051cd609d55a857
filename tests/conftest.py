"""Test setup: the Triton kernels run under the interpreter on the CPU.

TRITON_INTERPRET must be set before triton is first imported, hence here, at collection time.
"""
import os
import zlib

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import energyflow  # noqa: E402

FUSED_BACKENDS = [b for b in ("cpp", "triton") if energyflow.backends()[b].startswith("available")]


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A fresh, reproducible seed per test (derived from its id)."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
