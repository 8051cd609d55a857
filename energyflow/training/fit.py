"""Training loop: the energy objective (samples only) or maximum likelihood (flows).

    fit(model, data, objective="energy", estimator="distance", steps=..., batch_size=..., lr=...)

Estimators of the energy objective (docs/math.md, sections 2, 3, 5), all in standardised units:
  "distance"  energy distance between a data batch and a batch of model samples (no X-X term);
              unconditional models only.
  "score"     energy score of ``samples_per_target`` (m >= 2) samples per data row; needed for
              conditional models (each row's samples share its context).
  "sliced"    sliced energy distance (beta = 1) with 64 directions.

Checkpoints (model, optimiser, step, RNG states, history) are written atomically; a run resumed
from one continues bit for bit like an uninterrupted run with the same seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from energyflow import functional
from energyflow._io import atomic_save
from energyflow.models.base import GenerativeModel

OBJECTIVES = ("energy", "mle")
ESTIMATORS = ("distance", "score", "sliced")

__all__ = [
    "ESTIMATORS",
    "OBJECTIVES",
    "TrainConfig",
    "TrainState",
    "check_setup",
    "default_estimator",
    "fit",
    "loss_on_batch",
    "lr_factor",
]


@dataclass
class TrainConfig:
    """Settings of one training run (see the module docstring for the estimators).

    ``estimator=None`` picks ``"distance"`` for unconditional models and ``"score"`` for
    conditional ones (``default_estimator``).
    """

    objective: str = "energy"
    estimator: Optional[str] = None
    beta: float = 1.0
    samples_per_target: int = 2
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0


@dataclass
class TrainState:
    """Progress of a run: steps done, per-step records, seconds, and the learning-rate schedule
    as cosine segments ``[start_step, end_step, start_factor]`` (see ``lr_factor``)."""

    step: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0
    lr_segments: list = field(default_factory=list)


# The cosine schedule decays the learning rate to this fraction of ``lr``.
MIN_LR_FRACTION = 0.02


def lr_factor(segments: list, step: int) -> float:
    """The learning rate at ``step`` as a fraction of ``lr``: a cosine from each segment's start
    factor down to MIN_LR_FRACTION at its end. A run extended beyond its planned steps gets a new
    segment that starts where the schedule stood, so the rate never climbs back up.

    Example:
        >>> lr_factor([[0, 100, 1.0]], 0), lr_factor([[0, 100, 1.0]], 100)
        (1.0, 0.02)
    """
    start, end, begin = next((seg for seg in reversed(segments) if seg[0] <= step), segments[0])
    progress = min(max((step - start) / max(end - start, 1), 0.0), 1.0)
    return MIN_LR_FRACTION + (begin - MIN_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _plan_steps(state: TrainState, steps: int) -> None:
    """Make the schedule end at ``steps``: the first plan, or an extension of a resumed run."""
    if not state.lr_segments:
        state.lr_segments = [[0, steps, 1.0]]
    elif steps <= state.step:
        raise ValueError(
            f"steps={steps} but the run has already done {state.step} steps; pass more steps "
            "to extend it"
        )
    elif steps != state.lr_segments[-1][1]:
        state.lr_segments.append([state.step, steps, lr_factor(state.lr_segments, state.step)])


def default_estimator(conditional: bool) -> str:
    """The energy estimator used when none is named: the score for conditional models (each
    row's samples share its context), else the distance (all N x M cross pairs)."""
    return "score" if conditional else "distance"


def check_setup(
    model: GenerativeModel, config: TrainConfig, data: Tensor, context: Optional[Tensor]
) -> None:
    """Raise a ValueError naming the setting if ``model`` cannot be trained so on ``data``."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
    if config.estimator is not None and config.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {config.estimator!r}")
    if config.objective == "mle" and not model.has_density:
        raise ValueError(
            f"objective='mle' needs a model with a density; {type(model).__name__} has none "
            "(use 'energy')"
        )
    if data.dim() != 2 or data.shape[1] != model.features:
        raise ValueError(f"data must be (N, {model.features}), got shape {tuple(data.shape)}")
    if (context is None) != (model.context_features == 0):
        raise ValueError("pass context exactly when the model has context features")
    estimator = config.estimator or default_estimator(context is not None)
    if context is not None and config.objective == "energy" and estimator != "score":
        raise ValueError(
            "a conditional model needs estimator='score' (samples per target share its context)"
        )
    if config.samples_per_target < 2 and estimator == "score":
        raise ValueError("estimator='score' needs samples_per_target >= 2")
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")


def loss_on_batch(
    model: GenerativeModel, config: TrainConfig, x: Tensor, context: Optional[Tensor]
) -> Tensor:
    """The training loss of one batch (data units in, standardised inside)."""
    if config.objective == "mle":
        return -model.log_prob(x, context).mean()
    target = model.standardise(x)
    if config.estimator == "score":
        m = config.samples_per_target
        if context is None:
            samples = model.rsample_standardised((x.shape[0], m))
        else:
            samples = model.rsample_standardised((m,), context).transpose(
                0, 1
            )  # (m, B, D) -> (B, m, D)
        return functional.energy_score(samples, target, beta=config.beta)
    samples = model.rsample_standardised((x.shape[0],))
    if config.estimator == "sliced":
        return functional.sliced_energy_distance(target, samples, num_projections=64)
    return functional.energy_distance(target, samples, beta=config.beta, include_xx=False)


def _rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "data": generator.get_state()}


def fit(
    model: GenerativeModel,
    data: Tensor,
    *,
    context: Optional[Tensor] = None,
    config: Optional[TrainConfig] = None,
    checkpoint: Optional[Path] = None,
    resume: bool = False,
    evaluate: Optional[Callable[[GenerativeModel], dict]] = None,
    progress: bool = True,
    **overrides,
) -> TrainState:
    """Train ``model`` on ``data`` (N, D) [with ``context`` (N, C)] and return its TrainState.

    ``config`` fields may also be given as keywords (``steps=...``, ``lr=...``). With
    ``checkpoint`` a checkpoint is written every ``checkpoint_every`` steps and at the end;
    ``resume=True`` continues from it, and more ``steps`` than planned extend the run (the
    learning rate continues its decay from where it stood, ``lr_factor``). A loss that becomes
    NaN or inf raises FloatingPointError before the step, leaving the last checkpoint intact.
    ``evaluate(model)`` runs every ``eval_every`` steps (its
    randomness is isolated, so it does not change the training run) and lands in the history.

    Example:
        >>> import torch
        >>> from energyflow.models import SemiAutoregressiveGenerator
        >>> model = SemiAutoregressiveGenerator(2, 1, hidden_features=(16,))
        >>> state = fit(model, torch.randn(200, 2), steps=5, batch_size=32, progress=False)
        >>> state.step, len(state.history)
        (5, 5)
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    data = torch.as_tensor(data, dtype=model.loc.dtype)
    context = None if context is None else torch.as_tensor(context, dtype=model.loc.dtype)
    check_setup(model, config, data, context)
    config.estimator = config.estimator or default_estimator(context is not None)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    state = TrainState()
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise ValueError(f"resume=True but there is no checkpoint at {checkpoint}")
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        torch.set_rng_state(saved["rng"]["torch"])
        generator.set_state(saved["rng"]["data"])
        state = TrainState(**saved["state"])
    else:
        model.fit_standardisation(data)
    _plan_steps(state, config.steps)

    def save() -> None:
        if checkpoint is not None:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "rng": _rng_state(generator),
                    "state": asdict(state),
                    "config": asdict(config),
                },
                checkpoint,
            )

    bar = tqdm(
        total=config.steps,
        initial=state.step,
        desc="training",
        unit="step",
        disable=not progress,
        mininterval=0.5,
    )
    started = time.perf_counter() - state.seconds
    model.train()
    while state.step < config.steps:
        rows = torch.randint(len(data), (config.batch_size,), generator=generator)
        loss = loss_on_batch(model, config, data[rows], None if context is None else context[rows])
        if not torch.isfinite(loss):  # nothing is written: the last checkpoint stays good
            raise FloatingPointError(
                f"the loss became {loss.item()} at step {state.step}; lower the learning rate"
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * lr_factor(state.lr_segments, state.step)
        optimiser.step()
        state.step += 1
        state.seconds = time.perf_counter() - started
        record = {"step": state.step, "loss": loss.item(), "seconds": state.seconds}
        if evaluate is not None and config.eval_every and state.step % config.eval_every == 0:
            with torch.random.fork_rng(devices=[]):
                model.eval()
                record.update(evaluate(model))
                model.train()
        state.history.append(record)
        bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            rows_per_s=f"{config.batch_size * state.step / max(state.seconds, 1e-9):.0f}",
            refresh=False,
        )
        bar.update(1)
        if config.checkpoint_every and state.step % config.checkpoint_every == 0:
            save()
    bar.close()
    model.eval()
    save()
    return state
