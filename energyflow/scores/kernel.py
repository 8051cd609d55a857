"""The Gaussian kernel score (docs/math.md, 2.1): a term to add to the energy score."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from energyflow._validation import check_positive
from energyflow.ops import dispatch
from energyflow.scores._common import (
    check_scored,
    fp32_under_autocast,
    in_working_dtype,
    mean_over_distinct_pairs,
    reduced,
    representable,
)

__all__ = ["kernel_score"]


@fp32_under_autocast
def kernel_score(
    samples: Tensor,
    target: Tensor,
    *,
    bandwidth: float = 1.0,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Gaussian kernel score of ``m`` model samples per target (unbiased; docs/math.md, 2.1).

        KS_b = 1/(2 m (m-1)) sum_{j != k} k(y_bj, y_bk) - (1/m) sum_j k(y_bj, x_b) + 1/2,
        k(u, v) = exp(-||u - v||^2 / (2 h^2))

    Its expectation is half the squared MMD between the model and the target's distribution (the
    constant 1/2 makes a point mass at x_b score 0), so it is strictly proper. With a bandwidth
    ``h`` below the scale of the data it weighs local structure that the energy score (a
    long-range kernel) sees weakly: a term to add to the energy score, not a replacement (its
    gradient vanishes for samples farther than a few h from everything).

    Args:
        samples: ``(B, m, D)`` model samples per target (or ``(m, D)`` for one target), m >= 2.
        target: ``(B, D)`` observations (or ``(D,)``).
        bandwidth: h > 0, in the units of the points.
        weights, reduction: as in ``energy_score``.

    Returns:
        ``()`` for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``. Pure PyTorch: memory
        O(B m^2 D).

    Example:
        >>> samples = torch.tensor([[[0.0], [0.0]]])  # a point mass on the target: score 0
        >>> kernel_score(samples, torch.tensor([[0.0]]))
        tensor(0.)
    """
    h = check_positive("bandwidth", bandwidth)
    samples3, target3, weights = check_scored("kernel score", samples, target, weights, reduction)
    samples3, target3 = in_working_dtype(samples3, target3, names="samples,target")
    gamma = -0.5 / (h * h)
    within = (samples3[:, :, None] - samples3[:, None]).square().sum(-1)  # (B, m, m)
    to_target = (samples3 - target3).square().sum(-1)  # (B, m)
    scores = (
        0.5 * mean_over_distinct_pairs(torch.exp(gamma * within))
        - torch.exp(gamma * to_target).mean(1)
        + 0.5
    )
    scores = reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return representable(scores, dispatch.accumulation_dtype(samples.dtype), "kernel_score")
