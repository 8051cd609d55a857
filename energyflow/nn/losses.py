"""Loss modules wrapping the fused energy ops (see ``energyflow.functional``)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from energyflow import functional
from energyflow._validation import check_beta, check_choice
from energyflow.ops import dispatch


class EnergyScoreLoss(nn.Module):
    """Mean energy score of ``m`` samples per target: ``loss(samples (B,m,D), target (B,D))``.

    A strictly proper scoring rule for ``0 < beta < 2``: minimised only when the model's
    (conditional) distribution equals the data's. See :func:`energyflow.energy_score`.

    Example:
        >>> import torch
        >>> loss = EnergyScoreLoss()
        >>> samples = torch.randn(8, 4, 2, requires_grad=True)  # 4 samples for each of 8 targets
        >>> loss(samples, torch.randn(8, 2)).backward()
        >>> samples.grad.shape
        torch.Size([8, 4, 2])
    """

    def __init__(self, beta: float = 1.0, reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        self.beta = check_beta(beta)
        self.reduction = check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.backend = dispatch.check_available(backend, dispatch.PAIRWISE_BACKENDS)

    def forward(self, samples: Tensor, target: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        return functional.energy_score(
            samples,
            target,
            beta=self.beta,
            weights=weights,
            reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}, backend={self.backend!r}"


class EnergyDistanceLoss(nn.Module):
    """Energy distance between a data batch and a model batch: ``loss(data (N,D), samples (M,D))``.

    ``include_xx=False`` (the default for training) skips the data-data term, which carries no
    gradient for the model; the loss is then ED minus a constant. See
    :func:`energyflow.energy_distance`.

    Example:
        >>> import torch
        >>> data, samples = torch.randn(256, 3), torch.randn(128, 3, requires_grad=True)
        >>> EnergyDistanceLoss()(data, samples).backward()  # no 256 x 128 matrix is built
        >>> bool(torch.isfinite(samples.grad).all())
        True
    """

    def __init__(
        self,
        beta: float = 1.0,
        statistic: str = "v",
        include_xx: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.beta = check_beta(beta)
        self.statistic = check_choice("statistic", statistic, ("v", "u"))
        self.include_xx = include_xx
        self.backend = dispatch.check_available(backend, dispatch.PAIRWISE_BACKENDS)

    def forward(
        self,
        data: Tensor,
        samples: Tensor,
        data_weights: Optional[Tensor] = None,
        sample_weights: Optional[Tensor] = None,
    ) -> Tensor:
        return functional.energy_distance(
            data,
            samples,
            beta=self.beta,
            x_weights=data_weights,
            y_weights=sample_weights,
            statistic=self.statistic,
            include_xx=self.include_xx,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, statistic={self.statistic!r}, include_xx={self.include_xx}, "
            f"backend={self.backend!r}"
        )
