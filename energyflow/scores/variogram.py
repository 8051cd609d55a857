"""The variogram score (Scheuerer and Hamill, 2015; docs/math.md, 2.1): a term to add to the
energy score."""

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

__all__ = ["variogram_score"]


@fp32_under_autocast
def variogram_score(
    samples: Tensor,
    target: Tensor,
    *,
    p: float = 0.5,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Variogram score of order ``p`` of ``m`` model samples per target (Scheuerer and Hamill,
    2015; unbiased estimator; docs/math.md, 2.1).

        VS_b = sum_{d < e} (|x_bd - x_be|^p - E |Y_d - Y_e|^p)^2

    over the feature pairs (d, e), with the square of the expectation estimated without bias from
    the m samples' values v_j = |y_bjd - y_bje|^p: a^2 - 2 a mean_j v_j + sum_{j != k} v_j v_k /
    (m (m - 1)). Proper but not strictly (it sees only the distribution of pairwise differences,
    so not the location): it targets the dependence between features, where the energy score is
    weak, and belongs beside the energy score, not in its place.

    Args:
        samples: ``(B, m, D)`` (or ``(m, D)``), m >= 2 and D >= 2.
        target: ``(B, D)`` (or ``(D,)``).
        p: order in (0, 2]; 0.5 is the usual choice.
        weights, reduction: as in ``energy_score``.

    Returns:
        ``()`` for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``. Pure PyTorch: memory
        O(B m D^2).

    Example:
        >>> samples = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # differences 1, as the target's
        >>> variogram_score(samples, torch.tensor([5.0, 6.0]))
        tensor(0.)
    """
    p = check_positive("p", p, high=2.0)
    samples3, target3, weights = check_scored(
        "variogram score", samples, target, weights, reduction
    )
    features = samples3.shape[-1]
    if features < 2:
        raise ValueError(
            f"the variogram score compares pairs of features and needs D >= 2, got D={features}"
        )
    first, second = torch.triu_indices(features, features, offset=1, device=samples3.device)
    samples3, target3 = in_working_dtype(samples3, target3, names="samples,target")
    tiny = torch.finfo(samples3.dtype).tiny  # |0|^p has an infinite slope for p < 1

    def variogram(points: Tensor) -> Tensor:
        return (points[..., first] - points[..., second]).abs().clamp_min(tiny) ** p

    observed, modelled = variogram(target3)[:, 0], variogram(samples3)  # (B, P), (B, m, P)
    cross_moment = mean_over_distinct_pairs(modelled[:, :, None] * modelled[:, None])
    scores = (observed.square() - 2 * observed * modelled.mean(1) + cross_moment).sum(-1)
    scores = reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return representable(scores, dispatch.accumulation_dtype(samples.dtype), "variogram_score")
