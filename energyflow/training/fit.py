"""Training loop: the energy objective (samples only), maximum likelihood (flows), or both.

    fit(model, data, objective="energy", estimator="distance", steps=..., batch_size=..., lr=...)

The loss of a batch is ``energyflow.training.objective.Objective``; the settings are
``TrainConfig``; settings left unset take the recommended recipe for the data
(``energyflow.training.recipe``). What the loop adds:

- **Device and precision**: ``device="auto"`` (CUDA if present) moves the model and the data once
  (data too large for the GPU stays in pinned host memory and moves batch by batch);
  ``precision="bf16"``/``"fp16"`` autocasts the networks (fp16 with a GradScaler), the loss stays
  fp32; ``compile=True`` runs the loss through ``torch.compile``.
- **Random stream** (``training.stream``): step t draws its rows and noise from a generator on
  the device seeded with (seed, t), for the whole global batch. A resumed run therefore
  continues bit for bit (same device), and a run split over processes (each takes its share of
  the rows and noise) equals the single-process run with the same global batch.
- **Processes**: under torchrun (``WORLD_SIZE`` > 1) the loss is wrapped in DDP, the energy
  distance is the global one (``energyflow.distributed``), and only rank 0 writes checkpoints,
  evaluates and shows progress. A checkpoint resumes under any number of processes.
- **Length, schedule and budget**: a ``time_budget`` is the run's length (no step cap unless
  ``steps`` is given too); without one the run takes ``steps`` (default 2000). Linear warm-up,
  then cosine decay ending at the first of the two (``energyflow.training.schedule``).
- **Validation and averaging** (``training.validation``): ``val_fraction`` of the rows are
  held out; every ``val_every``
  steps the model's own objective on them is measured (with fixed noise, so values compare), the
  best weights are kept and, with ``patience``, the run stops after that many validations without
  improvement. ``ema`` keeps a moving average of the weights (``WeightAverage``) that validation
  and the final model use. The model ends with the best validated weights, else the average,
  else the last weights.

Checkpoints (``training.checkpoint``: model, optimiser, averages, best weights, scaler,
progress, history) are written atomically; a loss, or model samples, that become NaN or inf
raise FloatingPointError ("training diverged") before the step, leaving the last checkpoint
intact. The state returned (``TrainState``) says why the run stopped, its best step and
validation value, and holds the per-step history (loss, seconds, learning rate, validations).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from energyflow import distributed
from energyflow.models.base import GenerativeModel
from energyflow.models.image import ImageGenerator
from energyflow.ops.value_range import NonFiniteError
from energyflow.training.averaging import WeightAverage
from energyflow.training.checkpoint import load_checkpoint, save_checkpoint
from energyflow.training.config import (
    TrainConfig,
    check_setup,
    default_estimator,
    with_recipe,
)
from energyflow.training.device import autocast, grad_scaler, resolve_device
from energyflow.training.objective import Objective
from energyflow.training.progress import Progress
from energyflow.training.schedule import lr_factor, plan_schedule
from energyflow.training.stream import VALIDATION_STEP, DeviceRows, StepStream
from energyflow.training.validation import BestWeights, split_validation

__all__ = ["TrainConfig", "TrainState", "fit", "split_validation"]

GRAD_CLIP_NORM = 10.0


@dataclass
class TrainState:
    """Progress of a run: steps done, per-step records, seconds, the learning-rate schedule's
    cosine segments (``schedule.lr_factor``), and validation: the best value and its step, and
    how many validations have passed since. ``stopped_by``: "steps", "time_budget" or
    "patience"."""

    step: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0
    lr_segments: list = field(default_factory=list)
    best_val: Optional[float] = None
    best_step: int = 0
    validations_since_best: int = 0
    stopped_by: str = ""


@dataclass
class _Run:
    """What a run's steps need: the settings resolved for the data, the device, the rows (train
    and held out) and this process's share of the global batch."""

    config: TrainConfig
    device: torch.device
    train_x: Tensor
    train_c: Optional[Tensor]
    val_x: Tensor
    val_c: Optional[Tensor]
    share: slice


def _prepare(model: GenerativeModel, data, context, config: TrainConfig) -> _Run:
    device = resolve_device(config.device)
    distributed.init_from_environment(device)
    ranks, me = distributed.world_size(), distributed.rank()
    model.to(device)
    dtype = model.loc.dtype
    data = torch.as_tensor(data, dtype=dtype)
    context = None if context is None else torch.as_tensor(context, dtype=dtype)
    check_setup(model, config, data, context)
    config = with_recipe(
        config, len(data), model.features, images=isinstance(model, ImageGenerator)
    )
    if config.batch_size % ranks:
        raise ValueError(
            f"batch_size={config.batch_size} (the global batch) must divide evenly over the "
            f"{ranks} processes"
        )
    config.estimator = config.estimator or default_estimator(context is not None, model)
    train_rows, val_rows = split_validation(len(data), config.val_fraction, config.seed)
    share = config.batch_size // ranks
    return _Run(
        config=config,
        device=device,
        train_x=data[train_rows],
        train_c=None if context is None else context[train_rows],
        val_x=data[val_rows].to(device),
        val_c=None if context is None else context[val_rows].to(device),
        share=slice(me * share, (me + 1) * share),
    )


def _optimise(loss: Tensor, model: GenerativeModel, optimiser, scaler, rate: float) -> None:
    """One clipped gradient step at learning rate ``rate`` (through the fp16 scaler if any)."""
    for group in optimiser.param_groups:
        group["lr"] = rate
    optimiser.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimiser.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimiser)
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
    scaler.step(optimiser)
    scaler.update()


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

    ``config`` fields may also be given as keywords (``steps=...``, ``lr=...``, see
    ``TrainConfig``). With ``checkpoint`` a checkpoint is written every ``checkpoint_every``
    steps and at the end; ``resume=True`` continues from it, and more ``steps`` (or a longer
    ``time_budget``) than planned extend the run (the learning rate continues its decay from
    where it stood). Runs with a ``time_budget`` resume too, but their schedule follows the
    clock, so not bit for bit. ``evaluate(model)`` runs every ``eval_every`` steps on rank 0
    (with the averaged weights; its randomness is isolated) and lands in the history.

    Example:
        >>> import torch
        >>> from energyflow.models import SemiAutoregressiveGenerator
        >>> model = SemiAutoregressiveGenerator(2, 1, hidden_features=(16,))
        >>> state = fit(model, torch.randn(200, 2), steps=5, batch_size=32, progress=False)
        >>> state.step, len(state.history), state.stopped_by
        (5, 5, 'steps')
    """
    run = _prepare(
        model, data, context, TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    )
    config, device = run.config, run.device
    leader = distributed.rank() == 0
    objective = Objective(model, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.precision)
    average = WeightAverage(model, config.ema) if config.ema else None
    state, best = TrainState(), BestWeights(config.patience)
    if resume:
        saved = load_checkpoint(checkpoint, device)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        for part, key in ((average, "average"), (scaler, "scaler")):
            if part is not None and saved.get(key) is not None:
                part.load_state_dict(saved[key])
        best = BestWeights(config.patience, saved.get("best"))
        state = TrainState(**{**saved["state"], "stopped_by": ""})
    else:
        model.fit_standardisation(
            run.train_x.to(device),
            None if run.train_c is None else run.train_c.to(device),
            method=config.standardisation,
        )
    steps = config.planned_steps()
    plan_schedule(state.lr_segments, state.step, state.seconds, steps, config.time_budget)
    rows_of, context_of = DeviceRows(run.train_x, device), DeviceRows(run.train_c, device)
    step_module = distributed.data_parallel(objective, device)
    if config.compile:
        step_module = torch.compile(step_module)
    stream = StepStream(config.seed, len(run.train_x), device, model.loc.dtype)
    conditional = run.train_c is not None
    row_dim = objective.noise_row_dim(conditional)

    def noise_shape(batch: int) -> Optional[tuple[int, ...]]:
        return objective.noise_shape(batch, conditional) if objective.needs_samples else None

    def averaged() -> contextlib.AbstractContextManager:
        return average.applied(model) if average is not None else contextlib.nullcontext()

    def validate() -> float:
        _, noise = stream.draw(len(run.val_x), VALIDATION_STEP, noise_shape(len(run.val_x)))
        with torch.no_grad(), distributed.local(), averaged(), autocast(device, config.precision):
            model.eval()
            value = objective(run.val_x, run.val_c, noise, stream.generator).float()
            model.train()
        return distributed.broadcast_from_rank_zero(value).item()  # one decision for all ranks

    def save() -> None:
        if checkpoint is not None and leader:
            save_checkpoint(
                checkpoint, model=model, optimiser=optimiser, average=average, scaler=scaler,
                best=best.weights, state=state, config=config,
            )  # fmt: skip

    bar = Progress(steps, config.time_budget, state.step, state.seconds, progress and leader)
    started = time.perf_counter() - state.seconds
    model.train()
    while not state.stopped_by:
        rows, noise = stream.draw(config.batch_size, state.step, noise_shape(config.batch_size))
        rows = rows[run.share]
        if noise is not None:
            noise = noise[(slice(None),) * row_dim + (run.share,)]
        try:
            with autocast(device, config.precision):
                loss = step_module(rows_of[rows], context_of[rows], noise, stream.generator)
        except NonFiniteError:  # the data were checked: the model's samples diverged
            loss = torch.full((), math.nan, device=device)
        reported = distributed.mean_over_ranks(loss)
        if not torch.isfinite(reported):  # nothing is written: the last checkpoint stays good
            raise FloatingPointError(
                f"the loss (or the model's samples) became {reported.item()} at step "
                f"{state.step}: training diverged; lower the learning rate"
            )
        rate = config.lr * lr_factor(
            state.lr_segments, state.step, state.seconds, warmup_steps=config.warmup_steps
        )
        _optimise(loss, model, optimiser, scaler, rate)
        if average is not None:
            average.update(model)
        state.step += 1
        state.seconds = time.perf_counter() - started
        record = {"step": state.step, "loss": reported.item(), "seconds": state.seconds, "lr": rate}
        if steps is not None and state.step >= steps:
            state.stopped_by = "steps"
        elif config.time_budget is not None and distributed.decided_by_rank_zero(
            state.seconds >= config.time_budget, device
        ):
            state.stopped_by = "time_budget"
        if len(run.val_x) and (state.step % config.val_every == 0 or state.stopped_by):
            record["val_loss"] = validate()
            with averaged():
                if best.record(state, state.step, record["val_loss"], model):
                    state.stopped_by = state.stopped_by or "patience"
        if evaluate is not None and config.eval_every and state.step % config.eval_every == 0:
            if leader:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    with averaged():
                        model.eval()
                        record.update(evaluate(model))
                        model.train()
        state.history.append(record)
        bar.update(state.step, state.seconds, loss=f"{record['loss']:.4f}")
        if config.checkpoint_every and state.step % config.checkpoint_every == 0:
            save()
    bar.close()
    save()
    model.eval()
    if best.weights is not None:
        model.load_state_dict(best.weights)
    elif average is not None:
        average.copy_to(model)
    return state
