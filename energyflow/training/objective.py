"""The training loss of one batch, as a module (what DDP wraps and torch.compile compiles).

Estimators of the energy objective (docs/math.md, sections 2, 3, 5), in standardised units:
  "distance"  energy distance between the data batch and as many model samples (no X-X term);
              across processes, the global loss of ``energyflow.distributed``.
  "score"     energy score of ``samples_per_target`` (m >= 2) samples per data row (conditional
              models: each row's samples share its context), plus ``kernel_weight`` x the
              Gaussian kernel score and ``variogram_weight`` x the variogram score of the same
              samples when those weights are set (section 2.1).
  "sliced"    sliced energy distance (beta = 1) with 64 directions.
  "block_score"  semi-autoregressive models that sample every block given the true earlier
              blocks in one pass (``rsample_blocks_standardised``: the image model): the sum
              over blocks of each block's energy score, ``samples_per_target`` samples per row.
Objectives: "energy"; "mle" (mean negative log-likelihood); "hybrid" (energy + ``hybrid_weight``
x mean negative log-likelihood per feature, in standardised units).

The noise comes from the caller (``noise_shape`` tells its shape), so a run owns its random
stream: ``fit`` draws the whole global batch's noise and each process takes its rows.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from energyflow import distributed, functional
from energyflow.models.base import GenerativeModel
from energyflow.training.config import TrainConfig

SLICED_PROJECTIONS = 64

__all__ = ["Objective", "SLICED_PROJECTIONS"]


class Objective(nn.Module):
    """``Objective(model, config)(x, context, noise, generator)`` -> the scalar loss (fp32 or the
    model's dtype) of data rows ``x`` (B, D) in data units, their ``context`` (B, C) or None,
    and the model's ``noise`` (shape ``noise_shape(B)``; None for "mle"). ``generator`` draws
    the sliced estimator's directions."""

    def __init__(self, model: GenerativeModel, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.needs_samples = config.objective != "mle"
        self.needs_density = config.objective != "energy"

    def noise_shape(self, rows: int, conditional: bool) -> tuple[int, ...]:
        """The noise of ``rows`` data rows; the row axis is ``noise_row_dim(conditional)``."""
        features = self.model.noise_features
        if self.config.estimator == "block_score":
            return (rows, self.config.samples_per_target, features)
        if self.config.estimator != "score":
            return (rows, features)
        m = self.config.samples_per_target
        return (m, rows, features) if conditional else (rows, m, features)

    def noise_row_dim(self, conditional: bool) -> int:
        return 1 if self.config.estimator == "score" and conditional else 0

    def _energy(
        self, target: Tensor, context: Optional[Tensor], noise: Tensor, generator
    ) -> Tensor:
        config, model = self.config, self.model
        if config.estimator == "block_score":  # (B, K, m, d) samples of (B, K, d) blocks
            samples, blocks = model.rsample_blocks_standardised(
                target, model.standardise_context(context), noise
            )
            samples = samples.to(target.dtype)
            score = functional.energy_score(
                samples.flatten(0, 1), blocks.flatten(0, 1), beta=config.beta
            )
            return score * blocks.shape[1]  # the sum over blocks, the mean over rows
        if config.estimator == "score":
            if context is None:
                samples = model.rsample_standardised(noise.shape[:2], noise=noise)
            else:  # (m, B, D) -> (B, m, D)
                shape = noise.shape[:1]
                samples = model.rsample_standardised(shape, context, noise=noise).transpose(0, 1)
            return self._scores(samples.to(target.dtype), target)
        samples = model.rsample_standardised(noise.shape[:1], noise=noise).to(target.dtype)
        if config.estimator == "sliced":
            return distributed.global_sliced_energy_distance(
                target, samples, num_projections=SLICED_PROJECTIONS, generator=generator
            )
        return distributed.global_energy_distance(target, samples, beta=config.beta)

    def _scores(self, samples: Tensor, target: Tensor) -> Tensor:
        """The energy score of ``samples`` (B, m, D) and the terms beside it (config)."""
        config = self.config
        loss = functional.energy_score(samples, target, beta=config.beta)
        if config.kernel_weight:
            kernel = functional.kernel_score(samples, target, bandwidth=config.kernel_bandwidth)
            loss = loss + config.kernel_weight * kernel
        if config.variogram_weight:
            variogram = functional.variogram_score(samples, target, p=config.variogram_power)
            loss = loss + config.variogram_weight * variogram
        return loss

    def forward(
        self,
        x: Tensor,
        context: Optional[Tensor],
        noise: Optional[Tensor],
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        loss = x.new_zeros(())
        if self.needs_samples:
            loss = loss + self._energy(self.model.standardise(x), context, noise, generator)
        if self.needs_density:
            nll = -self.model.log_prob(x, context).to(x.dtype).mean()
            if self.config.objective == "mle":
                return nll
            # per feature and in standardised units (the moments' log-scale term is a constant)
            nll = (nll + self.model.standardise_log_det(x).mean()) / self.model.features
            loss = loss + self.config.hybrid_weight * nll
        return loss
