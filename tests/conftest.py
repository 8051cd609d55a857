"""Each test gets a fresh, reproducible seed. Shared helpers live in ``helpers.py`` (nothing is
imported from here); the interpreter flag for Triton is set by the root ``conftest.py``."""

import zlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A fresh, reproducible seed per test (derived from its id)."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
