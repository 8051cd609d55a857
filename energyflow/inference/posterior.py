"""Amortised posterior inference: train a conditional model on simulations, then sample
p(theta | x) for any observation in one pass.

    posterior = fit_posterior(theta, x, prior=BoxPrior(-3, 3, dim=5), time_budget=60)
    draws = posterior.sample(10000, x_obs)          # (10000, D); x_obs (B, C) -> (10000, B, D)
    log_density = posterior.log_prob(theta, x_obs)  # flows only

The model sees theta and x standardised (both kept in the model). A bounded prior is handled by
``support``: ``"transform"`` (default) trains on u = logit of the box coordinates and maps the
samples back, so no draw can leave the box; ``"reject"`` trains on theta and redraws samples that
fall outside, reporting the acceptance rate (``last_acceptance_rate``). Nothing outside the
prior's support is ever returned.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import Tensor

from energyflow._io import atomic_save
from energyflow.inference.priors import Prior, SampleShape, as_sample_shape, prior_from_state
from energyflow.models import GenerativeModel, build_model, load_model
from energyflow.training.config import TrainConfig
from energyflow.training.fit import TrainState, fit
from energyflow.training.recipe import POSTERIOR_RECIPE, recommended_posterior_options

SUPPORTS = ("transform", "reject")
MAX_REJECTION_ROUNDS = 100

__all__ = ["Posterior", "SUPPORTS", "fit_posterior", "load_posterior"]


class Posterior:
    """A trained conditional model as a posterior over theta given observations x."""

    def __init__(
        self, model: GenerativeModel, prior: Optional[Prior] = None, support: str = "transform"
    ) -> None:
        if support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
        self.model, self.prior, self.support = model, prior, support
        self.last_acceptance_rate: Optional[float] = None
        self.state: Optional[TrainState] = None

    @property
    def transformed(self) -> bool:
        return self.prior is not None and self.prior.bounded and self.support == "transform"

    def _observations(self, x_obs: Tensor) -> tuple[Tensor, bool]:
        x_obs = torch.as_tensor(x_obs, dtype=self.model.loc.dtype, device=self.model.loc.device)
        single = x_obs.dim() == 1
        x_obs = x_obs[None] if single else x_obs
        if x_obs.dim() != 2 or x_obs.shape[1] != self.model.context_features:
            raise ValueError(
                f"x_obs must be ({self.model.context_features},) or (B, "
                f"{self.model.context_features}), got shape {tuple(x_obs.shape)}"
            )
        if not bool(torch.isfinite(x_obs).all()):
            raise ValueError("x_obs holds NaN or inf")
        return x_obs, single

    @torch.no_grad()
    def sample(self, sample_shape: SampleShape, x_obs: Tensor) -> Tensor:
        """Posterior draws for each observation, ``sample_shape`` as in torch.distributions (an
        int n is ``(n,)``): x_obs (C,) -> (*sample_shape, D); (B, C) -> (*sample_shape, B, D).
        All inside the prior's support."""
        shape = as_sample_shape(sample_shape)
        x_obs, single = self._observations(x_obs)
        if shape.numel() == 0:
            draws = x_obs.new_empty(0, len(x_obs), self.model.features)
        else:
            draws = self.model.sample((shape.numel(),), x_obs)
        if self.transformed:
            draws = self.prior.constrain(draws)
        elif self.prior is not None and self.prior.bounded and draws.numel():
            draws = self._rejected(draws, x_obs)
        draws = draws.reshape(*shape, *draws.shape[1:])
        return draws.select(-2, 0) if single else draws

    def _rejected(self, draws: Tensor, x_obs: Tensor) -> Tensor:
        """Redraw the samples outside the prior's box until all are inside."""
        outside = ~self.prior.contains(draws)
        proposed, accepted = outside.numel(), int((~outside).sum())
        for _ in range(MAX_REJECTION_ROUNDS):
            if not bool(outside.any()):
                break
            fresh = self.model.sample((draws.shape[0],), x_obs)
            fill = outside & self.prior.contains(fresh)
            draws = torch.where(fill[..., None], fresh, draws)
            proposed += int(outside.sum())
            accepted += int(fill.sum())
            outside = outside & ~fill
        self.last_acceptance_rate = accepted / proposed
        if bool(outside.any()):
            raise RuntimeError(
                f"rejection kept {self.last_acceptance_rate:.2%} of the draws inside the prior "
                f"and {int(outside.sum())} were still outside after {MAX_REJECTION_ROUNDS} "
                "rounds; use support='transform'"
            )
        return draws

    def log_prob(self, theta: Tensor, x_obs: Tensor) -> Tensor:
        """log p(theta | x) for theta (N, D) and x_obs (C,) or (N, C) (models with a density;
        with support='reject' the density is that of the model before rejection)."""
        if not self.model.has_density:
            raise NotImplementedError(
                f"{type(self.model).__name__} has no density; train a BlockAffineFlow for log_prob"
            )
        x_obs, _ = self._observations(x_obs)
        theta = torch.as_tensor(theta, dtype=self.model.loc.dtype, device=self.model.loc.device)
        context = x_obs.expand(len(theta), -1)
        if not self.transformed:
            return self.model.log_prob(theta, context)
        inside = self.prior.contains(theta)
        u = self.prior.unconstrain(theta)
        value = self.model.log_prob(u, context) - self.prior.log_abs_det_constrain(u)
        return torch.where(inside, value, torch.full_like(value, -float("inf")))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the posterior (model, prior, support) atomically; ``load_posterior`` reads it."""
        self.model.save(path)
        saved = torch.load(path, weights_only=True)
        saved["posterior"] = {
            "prior": None if self.prior is None else self.prior.state(),
            "support": self.support,
        }
        atomic_save(saved, path)


def load_posterior(path: Union[str, os.PathLike], map_location: str = "cpu") -> Posterior:
    """The posterior saved by ``Posterior.save``."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if "posterior" not in saved:
        raise ValueError(f"{path}: not an energyflow posterior (no prior/support entry)")
    model = load_model(path, map_location=map_location)
    info = saved["posterior"]
    return Posterior(model, prior_from_state(info["prior"]), info["support"])


def _checked_pairs(theta, x) -> tuple[Tensor, Tensor]:
    theta, x = torch.as_tensor(theta, dtype=torch.float32), torch.as_tensor(x, dtype=torch.float32)
    if theta.dim() == 1:
        theta = theta[:, None]
    if x.dim() == 1:
        x = x[:, None]
    if theta.dim() != 2 or x.dim() != 2 or len(theta) != len(x):
        raise ValueError(
            f"theta (N, D) and x (N, C) need one row per simulation; got {tuple(theta.shape)} "
            f"and {tuple(x.shape)}"
        )
    if len(theta) < 10:
        raise ValueError(f"need at least 10 simulations, got {len(theta)}")
    for name, values in (("theta", theta), ("x", x)):
        if not bool(torch.isfinite(values).all()):
            row = int(torch.nonzero(~torch.isfinite(values).all(1))[0])
            raise ValueError(f"{name} row {row} holds NaN or inf; drop failed simulations first")
    return theta, x


def fit_posterior(
    theta: Tensor,
    x: Tensor,
    *,
    model: Union[str, GenerativeModel] = "saef",
    prior: Optional[Prior] = None,
    support: str = "transform",
    blocks: Optional[int] = None,
    hidden_features: Optional[tuple[int, ...]] = None,
    objective: str = "energy",
    progress: bool = False,
    **train_settings,
) -> Posterior:
    """Train a conditional model of theta (N, D) given x (N, C) and return its ``Posterior``.

    ``model``: "saef" (energy-trained generator), "affine" (BlockAffineFlow: energy, mle or
    hybrid), or a conditional GenerativeModel of your own; ``blocks`` (K) and
    ``hidden_features`` default to ``training.recipe.recommended_posterior_options`` (saef: K =
    1, (128, 128); affine: K = min(D, 4), (256, 256)). ``prior``: its support bounds the draws
    (see ``Posterior``). ``train_settings`` are ``TrainConfig`` fields (``time_budget=60``,
    ``steps=...``, ``samples_per_target=...``); unset ones take ``POSTERIOR_RECIPE`` (4 samples
    per simulation, batch 256, lr 1e-3, 10% held out to keep the best weights), then the
    general recipe.

    Example:
        >>> from energyflow.inference import get_task
        >>> task = get_task("two_moons")
        >>> theta, x = task.simulations(500)
        >>> posterior = fit_posterior(theta, x, prior=task.prior, steps=20, hidden_features=(16,))
        >>> draws = posterior.sample(100, task.observations[:3])
        >>> draws.shape, bool(task.prior.contains(draws).all())
        (torch.Size([100, 3, 2]), True)
    """
    theta, x = _checked_pairs(theta, x)
    if prior is not None:
        if prior.dim != theta.shape[1]:
            raise ValueError(f"the prior has {prior.dim} dimensions but theta has {theta.shape[1]}")
        if prior.bounded and not bool(prior.contains(theta).all()):
            raise ValueError("theta holds rows outside the prior's support")
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    transformed = prior is not None and prior.bounded and support == "transform"
    target = prior.unconstrain(theta) if transformed else theta
    if isinstance(model, str):
        options = recommended_posterior_options(theta.shape[1], model)
        if blocks:
            options["blocks"] = blocks
        if hidden_features:
            options["hidden_features"] = tuple(hidden_features)
        model = build_model(model, theta.shape[1], context_features=x.shape[1], **options)
    elif not isinstance(model, GenerativeModel) or model.context_features != x.shape[1]:
        raise ValueError(
            f"model must be 'saef', 'affine' or a GenerativeModel with {x.shape[1]} context "
            "features"
        )
    given = {key: value for key, value in train_settings.items() if value is not None}
    settings = {**POSTERIOR_RECIPE, "objective": objective, **given}
    posterior = Posterior(model, prior, support)
    posterior.state = fit(
        model, target, context=x, config=TrainConfig(**settings), progress=progress
    )
    return posterior
