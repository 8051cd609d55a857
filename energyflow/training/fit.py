"""Training loop: the energy objective (samples only), maximum likelihood (flows), or both.

    fit(model, data, objective="energy", estimator="distance", steps=..., batch_size=..., lr=...)

The loss of a batch is ``energyflow.training.objective.Objective``; the settings are
``TrainConfig``; settings left unset take the recommended recipe for the data
(``energyflow.training.recipe``). What the loop adds:

- **Device and precision**: ``device="auto"`` (CUDA if present) moves the model and the data once
  (data too large for the GPU stays in pinned host memory and moves batch by batch);
  ``precision="bf16"``/``"fp16"`` autocasts the networks (fp16 with a GradScaler), the loss stays
  fp32; ``compile=True`` runs the loss through ``torch.compile``.
- **Random stream**: step t draws its rows and noise from a generator on the device seeded with
  (seed, t), for the whole global batch. A resumed run therefore continues bit for bit (same
  device), and a run split over processes (each takes its share of the rows and noise) equals
  the single-process run with the same global batch.
- **Processes**: under torchrun (``WORLD_SIZE`` > 1) the loss is wrapped in DDP, the energy
  distance is the global one (``energyflow.distributed``), and only rank 0 writes checkpoints,
  evaluates and shows progress. A checkpoint resumes under any number of processes.
- **Schedule and budget**: linear warm-up, cosine decay ending at ``steps`` or at
  ``time_budget`` seconds, whichever comes first (``energyflow.training.schedule``).
- **Validation and averaging**: ``val_fraction`` of the rows are held out; every ``val_every``
  steps the model's own objective on them is measured (with fixed noise, so values compare), the
  best weights are kept and, with ``patience``, the run stops after that many validations without
  improvement. ``ema`` keeps a moving average of the weights (``WeightAverage``) that validation
  and the final model use. The model ends with the best validated weights, else the average,
  else the last weights.

Checkpoints (model, optimiser, averages, best weights, scaler, progress, history) are written
atomically; a loss that becomes NaN or inf raises FloatingPointError before its step, leaving
the last checkpoint intact.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from energyflow import distributed
from energyflow._io import atomic_save
from energyflow.models.base import GenerativeModel
from energyflow.ops.value_range import NonFiniteError
from energyflow.training.averaging import WeightAverage
from energyflow.training.config import (
    ESTIMATORS,
    OBJECTIVES,
    TrainConfig,
    check_setup,
    default_estimator,
    with_recipe,
)
from energyflow.training.device import autocast, grad_scaler, resolve_device
from energyflow.training.objective import Objective
from energyflow.training.schedule import MIN_LR_FRACTION, lr_factor, plan_steps

__all__ = [
    "ESTIMATORS",
    "MIN_LR_FRACTION",
    "OBJECTIVES",
    "TrainConfig",
    "TrainState",
    "check_setup",
    "default_estimator",
    "fit",
    "lr_factor",
    "split_validation",
]

GRAD_CLIP_NORM = 10.0
_VALIDATION_STREAM = -1  # the step index whose random stream validation uses (fixed noise)


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


def split_validation(rows: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Row indices (train, validation) for holding out ``ceil(fraction * rows)`` rows at random
    (a permutation seeded by ``seed``; no validation rows for fraction 0).

    Example:
        >>> train, val = split_validation(10, 0.2, seed=0)
        >>> len(train), len(val), sorted(train.tolist() + val.tolist()) == list(range(10))
        (8, 2, True)
    """
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    held_out = math.ceil(fraction * rows) if fraction else 0
    return order[held_out:], order[:held_out]


def _step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random stream (distinct for every (seed, step))."""
    return (seed * 1_000_003 + step + 1) % (2**63)


class _Rows:
    """The training rows on the device, or in pinned host memory when too large for the GPU
    (a quarter of its free memory), fetched batch by batch."""

    def __init__(self, values: Optional[Tensor], device: torch.device) -> None:
        self.device = device
        if values is None:
            self.values = None
            return
        on_host = device.type == "cuda" and values.nbytes > torch.cuda.mem_get_info(device)[0] // 4
        self.values = values.pin_memory() if on_host else values.to(device)

    def __getitem__(self, rows: Tensor) -> Optional[Tensor]:
        if self.values is None:
            return None
        return self.values[rows.to(self.values.device)].to(self.device, non_blocking=True)


def _checkpoint_payload(
    model, optimiser, average, scaler, best, state: TrainState, config: TrainConfig
) -> dict:
    return {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "average": None if average is None else average.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "best": best,
        "state": asdict(state),
        "config": asdict(config),
    }


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
    steps and at the end; ``resume=True`` continues from it, and more ``steps`` than planned
    extend the run (the learning rate continues its decay from where it stood). Runs with a
    ``time_budget`` resume too, but their schedule follows the clock, so not bit for bit.
    ``evaluate(model)`` runs every ``eval_every`` steps on rank 0 (with the averaged weights; its
    randomness is isolated) and lands in the history.

    Example:
        >>> import torch
        >>> from energyflow.models import SemiAutoregressiveGenerator
        >>> model = SemiAutoregressiveGenerator(2, 1, hidden_features=(16,))
        >>> state = fit(model, torch.randn(200, 2), steps=5, batch_size=32, progress=False)
        >>> state.step, len(state.history)
        (5, 5)
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    device = resolve_device(config.device)
    multi = distributed.init_from_environment(device)
    ranks, me = distributed.world_size(), distributed.rank()
    model.to(device)
    dtype = model.loc.dtype
    data = torch.as_tensor(data, dtype=dtype)
    context = None if context is None else torch.as_tensor(context, dtype=dtype)
    check_setup(model, config, data, context)
    config = with_recipe(config, len(data), model.features)
    if config.batch_size % ranks:
        raise ValueError(
            f"batch_size={config.batch_size} (the global batch) must divide evenly over the "
            f"{ranks} processes"
        )
    config.estimator = config.estimator or default_estimator(context is not None)
    train_rows, val_rows = split_validation(len(data), config.val_fraction, config.seed)
    conditional = context is not None
    train_x, val_x = data[train_rows], data[val_rows].to(device)
    train_c = None if context is None else context[train_rows]
    val_c = None if context is None else context[val_rows].to(device)

    objective = Objective(model, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.precision)
    average = WeightAverage(model, config.ema) if config.ema else None
    state, best = TrainState(), None
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise ValueError(f"resume=True but there is no checkpoint at {checkpoint}")
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        for part, key in ((average, "average"), (scaler, "scaler")):
            if part is not None and saved.get(key) is not None:
                part.load_state_dict(saved[key])
        best = saved.get("best")
        state = TrainState(**saved["state"])
        state.stopped_by = ""
    else:
        model.fit_standardisation(
            train_x.to(device), None if train_c is None else train_c.to(device)
        )
    plan_steps(state.lr_segments, state.step, config.steps)
    rows_of, context_of = _Rows(train_x, device), _Rows(train_c, device)

    step_module: torch.nn.Module = objective
    if multi:
        step_module = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        step_module = torch.compile(step_module)
    generator = torch.Generator(device=device)
    share = config.batch_size // ranks
    mine = slice(me * share, (me + 1) * share)
    row_dim = objective.noise_row_dim(conditional)

    def draw(batch: int, step: int) -> tuple[Optional[Tensor], Tensor]:
        """The noise of a batch of ``batch`` rows and the row indices, from step's stream."""
        generator.manual_seed(_step_seed(config.seed, step))
        rows = torch.randint(len(train_x), (batch,), generator=generator, device=device)
        if not objective.needs_samples:
            return None, rows
        noise = torch.randn(
            objective.noise_shape(batch, conditional),
            generator=generator,
            device=device,
            dtype=dtype,
        )
        return noise, rows

    def averaged() -> contextlib.AbstractContextManager:
        return average.applied(model) if average is not None else contextlib.nullcontext()

    def validate() -> float:
        noise, _ = draw(len(val_x), _VALIDATION_STREAM)
        with torch.no_grad(), distributed.local(), averaged(), autocast(device, config.precision):
            model.eval()
            value = objective(val_x, val_c, noise, generator).float()
            model.train()
        if multi:  # one decision for all ranks
            dist.broadcast(value, 0)
        return value.item()

    def save() -> None:
        if checkpoint is not None and me == 0:
            payload = _checkpoint_payload(model, optimiser, average, scaler, best, state, config)
            atomic_save(payload, checkpoint)

    bar = tqdm(
        total=config.steps,
        initial=state.step,
        desc="training",
        unit="step",
        disable=not progress or me != 0,
        mininterval=0.5,
    )
    started = time.perf_counter() - state.seconds
    model.train()
    while not state.stopped_by:
        noise, rows = draw(config.batch_size, state.step)
        rows = rows[mine]
        if noise is not None:
            noise = noise[(slice(None),) * row_dim + (mine,)]
        try:
            with autocast(device, config.precision):
                loss = step_module(rows_of[rows], context_of[rows], noise, generator)
        except NonFiniteError:  # the data were checked: the model's samples diverged
            loss = torch.full((), math.nan, device=device)
        reported = loss.detach().clone()
        if multi:
            dist.all_reduce(reported)
            reported /= ranks
        if not torch.isfinite(reported):  # nothing is written: the last checkpoint stays good
            raise FloatingPointError(
                f"the loss (or the model's samples) became {reported.item()} at step "
                f"{state.step}: training diverged; lower the learning rate"
            )
        rate = config.lr * lr_factor(
            state.lr_segments,
            state.step,
            warmup_steps=config.warmup_steps,
            seconds=state.seconds,
            time_budget=config.time_budget,
        )
        for group in optimiser.param_groups:
            group["lr"] = rate
        optimiser.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimiser.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            scaler.step(optimiser)
            scaler.update()
        if average is not None:
            average.update(model)
        state.step += 1
        state.seconds = time.perf_counter() - started
        record = {"step": state.step, "loss": reported.item(), "seconds": state.seconds, "lr": rate}
        if state.step >= config.steps:
            state.stopped_by = "steps"
        elif config.time_budget is not None:
            over = torch.tensor(float(state.seconds >= config.time_budget), device=device)
            if multi:  # rank 0's clock decides for all
                dist.broadcast(over, 0)
            state.stopped_by = "time_budget" if over.item() else ""
        if len(val_x) and (state.step % config.val_every == 0 or state.stopped_by):
            record["val_loss"] = validate()
            if state.best_val is None or record["val_loss"] < state.best_val:
                state.best_val, state.best_step, state.validations_since_best = (
                    record["val_loss"],
                    state.step,
                    0,
                )
                with averaged():
                    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.validations_since_best += 1
                if config.patience and state.validations_since_best >= config.patience:
                    state.stopped_by = state.stopped_by or "patience"
        if evaluate is not None and config.eval_every and state.step % config.eval_every == 0:
            if me == 0:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    with averaged():
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
    save()
    model.eval()
    if best is not None:
        model.load_state_dict(best)
    elif average is not None:
        average.copy_to(model)
    return state
