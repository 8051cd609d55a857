"""Triton kernels of energyflow (installed as ``energyflow.kernels``).

Device code and launch helpers only; they know nothing of models. Set ``TRITON_INTERPRET=1``
before importing triton to run them on CPU tensors (tests).
"""
from .pairwise_row_stats import row_stats

__all__ = ["row_stats"]
