"""zuko's flows behind energyflow's model interface (benchmark-only dependency), so the studies
train them with the same ``fit`` loop (validation, best weights, schedule, time budget)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from energyflow.models import GenerativeModel


class ZukoFlow(GenerativeModel):
    """``zuko.flows.<kind>`` (e.g. "MAF", "NSF") on standardised data and context.

    ``options`` go to zuko's constructor (its documented defaults otherwise)."""

    has_density = True

    def __init__(self, kind: str, features: int, context_features: int = 0, **options) -> None:
        import zuko

        super().__init__(features, context_features, {})
        self.noise_features = features
        self.flow = getattr(zuko.flows, kind)(features, context_features, **options)

    def _conditioned(self, context: Optional[Tensor]):
        return self.flow(None if context is None else self.standardise_context(context))

    def log_prob(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return self._conditioned(context).log_prob(self.standardise(x)) - self.scale.log().sum()

    def rsample_standardised(self, shape=(), context=None, *, noise=None) -> Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self._conditioned(context).rsample(shape)
