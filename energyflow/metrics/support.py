"""Judges of where the samples lie relative to the data, from nearest-neighbour balls.

With features standardised by the data's mean and standard deviation, and NND_k(r) the distance
of a row r to its k-th nearest neighbour within its own set:

- precision and recall (Kynkaanniemi et al., 2019): the share of samples inside some data
  row's k-NN ball, and of data rows inside some sample's k-NN ball (fidelity, diversity);
- density and coverage (Naeem et al., 2020): the mean number of data balls holding a sample,
  over k (about 1 when the samples follow the data), and the share of data balls holding any
  sample (robust to outliers in either set);
- off-support share: the share of samples farther from every data row than all but
  ``1 - quantile`` of the data rows are from the rest (leave-one-out nearest-neighbour
  distances); the data's own share is ``1 - quantile`` by construction, so a model that puts
  mass where the data has none reads above it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from energyflow.metrics._rows import ArrayLike, as_rows, same_features

__all__ = ["density_coverage", "off_support_share", "precision_recall"]

_CHUNK = 2048


def _standardised(samples: ArrayLike, data: ArrayLike, max_rows: int) -> tuple[Tensor, Tensor]:
    a, b = as_rows(samples, "samples")[:max_rows], as_rows(data, "data")[:max_rows]
    same_features(a, b, ("samples", "data"))
    mean, std = b.mean(0), b.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (a - mean) / std, (b - mean) / std


def _kth_neighbour_distance(rows: Tensor, k: int) -> Tensor:
    """Distance of each row to its k-th nearest other row of the same set (the farthest other
    row when there are no more than k: tiny sets still get a radius)."""
    if len(rows) < 2:
        raise ValueError(f"k-NN balls need at least 2 rows in each set, got {len(rows)}")
    k = min(k, len(rows) - 1)
    parts = [torch.cdist(chunk, rows).kthvalue(k + 1, dim=1).values for chunk in rows.split(_CHUNK)]
    return torch.cat(parts)


def _inside_counts(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """For each point, how many balls (centres, radii) hold it."""
    counts = [(torch.cdist(chunk, centres) <= radii[None]).sum(1) for chunk in points.split(_CHUNK)]
    return torch.cat(counts)


def precision_recall(
    samples: ArrayLike, data: ArrayLike, *, k: int = 3, max_rows: int = 5000
) -> tuple[float, float]:
    """(precision, recall) with k-NN balls; both 1 for samples that follow the data.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> model, data = torch.randn(2, 500, 2, generator=g)
        >>> p, r = precision_recall(model, data)
        >>> p > 0.9 and r > 0.9
        True
    """
    a, b = _standardised(samples, data, max_rows)
    precision = _inside_counts(a, b, _kth_neighbour_distance(b, k)).gt(0).double().mean()
    recall = _inside_counts(b, a, _kth_neighbour_distance(a, k)).gt(0).double().mean()
    return float(precision), float(recall)


def density_coverage(
    samples: ArrayLike, data: ArrayLike, *, k: int = 5, max_rows: int = 5000
) -> tuple[float, float]:
    """(density, coverage) with the data's k-NN balls; about (1, 1) for samples that follow the
    data (density can exceed 1 where samples crowd the data's dense parts).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> model, data = torch.randn(2, 500, 2, generator=g)
        >>> d, c = density_coverage(model, data)
        >>> 0.8 < d < 1.2 and c > 0.9
        True
    """
    a, b = _standardised(samples, data, max_rows)
    radii = _kth_neighbour_distance(b, k)
    density = _inside_counts(a, b, radii).double().sum() / (k * len(a))
    nearest_sample = torch.cat([torch.cdist(c, a).min(1).values for c in b.split(_CHUNK)])
    coverage = (nearest_sample <= radii).double().mean()
    return float(density), float(coverage)


def off_support_share(
    samples: ArrayLike, data: ArrayLike, *, quantile: float = 0.999, max_rows: int = 5000
) -> float:
    """Share of samples whose nearest data row is farther than the ``quantile`` of the data
    rows' leave-one-out nearest-neighbour distances (the data's own share: 1 - quantile).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> data = torch.randn(2000, 2, generator=g)
        >>> off_support_share(torch.randn(2000, 2, generator=g), data) < 0.01
        True
        >>> off_support_share(torch.randn(2000, 2, generator=g) * 3, data) > 0.1
        True
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    a, b = _standardised(samples, data, max_rows)
    threshold = torch.quantile(_kth_neighbour_distance(b, 1), quantile)
    nearest = torch.cat([torch.cdist(chunk, b).min(1).values for chunk in a.split(_CHUNK)])
    return float((nearest > threshold).double().mean())
