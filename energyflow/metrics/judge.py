"""Every strong judge of a sample at once: what ``energyflow eval``, the demo and the studies
report."""

from __future__ import annotations

from energyflow.metrics._rows import ArrayLike
from energyflow.metrics.support import density_coverage, off_support_share, precision_recall
from energyflow.metrics.two_sample import c2st_boosted_trees, c2st_knn

__all__ = ["JUDGES", "judge"]

# the names ``judge`` returns, in the order reports show them
JUDGES = (
    "c2st",
    "c2st_boosted_trees",
    "c2st_knn",
    "precision",
    "recall",
    "density",
    "coverage",
    "off_support_share",
)


def judge(samples: ArrayLike, data: ArrayLike, *, seed: int = 0, max_rows: int = 5000) -> dict:
    """The strong judges of ``samples`` against held-out ``data`` (rows, features), as floats:
    ``c2st`` (the larger of the boosted-tree and k-NN C2STs, both also by name), k-NN precision
    and recall, density and coverage, and the off-support share (the data's own: 0.001).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> scores = judge(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)))
        >>> list(scores) == list(JUDGES) and scores["c2st"] < 0.6
        True
    """
    options = {"seed": seed, "max_rows": max_rows}
    trees = c2st_boosted_trees(samples, data, **options)
    knn = c2st_knn(samples, data, **options)
    precision, recall = precision_recall(samples, data, max_rows=max_rows)
    density, coverage = density_coverage(samples, data, max_rows=max_rows)
    return {
        "c2st": max(trees, knn),
        "c2st_boosted_trees": trees,
        "c2st_knn": knn,
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "off_support_share": off_support_share(samples, data, max_rows=max_rows),
    }
