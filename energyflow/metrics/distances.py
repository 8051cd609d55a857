"""Distances between two samples: the energy distance and the Gaussian MMD."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from energyflow import functional
from energyflow.metrics._rows import ArrayLike, as_rows

__all__ = ["mmd", "sample_energy_distance"]

# rows of each set whose pairwise distances give the median heuristic's bandwidth
MEDIAN_ROWS = 1000


def sample_energy_distance(samples: ArrayLike, data: ArrayLike) -> float:
    """V-statistic energy distance with beta = 1 between two sets of rows, as a float (the
    tensor-valued, differentiable op is ``energyflow.energy_distance``); 0 is perfect.

    Example:
        >>> import numpy as np
        >>> rows = np.random.default_rng(0).normal(size=(100, 2))
        >>> sample_energy_distance(rows, rows)
        0.0
    """
    return float(functional.energy_distance(as_rows(samples, "samples"), as_rows(data, "data")))


def mmd(
    samples: ArrayLike, data: ArrayLike, *, bandwidth: Optional[float] = None, max_rows: int = 4000
) -> float:
    """Squared MMD (biased V-statistic) with k(u, v) = exp(-|u - v|^2 / (2 h^2)), h the median
    pairwise distance of the pooled rows (their first ``MEDIAN_ROWS`` of each set) unless given.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> mmd(rng.normal(size=(300, 2)), rng.normal(size=(300, 2))) < 0.01
        True
    """
    a, b = as_rows(samples, "samples")[:max_rows], as_rows(data, "data")[:max_rows]
    if bandwidth is None:
        pooled = torch.cat([a[:MEDIAN_ROWS], b[:MEDIAN_ROWS]])
        distances = torch.cdist(pooled, pooled)
        bandwidth = float(distances[distances > 0].median())

    def kernel(u: Tensor, v: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(u, v).square() / (2 * bandwidth**2)).mean()

    return float(kernel(a, a) + kernel(b, b) - 2 * kernel(a, b))
