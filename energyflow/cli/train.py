"""``energyflow train``: train a model into a run folder (or resume, or extend, one).

Every argument and the data are checked before anything is written; the run folder is locked
for the run's life; the run is complete once model.pt is written, and a failure in the report
after it says so (``energyflow eval`` writes the report again). Under torchrun every process
trains its share of the batch and rank 0 alone checks, locks and writes the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

from energyflow import distributed
from energyflow._io import atomic_write_json
from energyflow.cli.arguments import given_settings
from energyflow.cli.report import evaluate, summary_line, write_report
from energyflow.cli.run_folder import (
    CHECKPOINT,
    CONFIG,
    MODEL,
    RunLock,
    check_not_busy,
    foreign_entries,
    read_config,
)
from energyflow.cli.settings import GROUPS, RunSettings, dataset_of, model_of, resolve
from energyflow.training.config import check_setup
from energyflow.training.data import BUILTIN
from energyflow.training.device import resolve_device
from energyflow.training.fit import fit
from energyflow.training.validation import split_validation

__all__ = ["cmd_train"]


def _check_new_folder(out: Path, overwrite: bool) -> None:
    if read_config(out) is not None or (out / CHECKPOINT).exists() or (out / MODEL).exists():
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    foreign = foreign_entries(out)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"--out {out} is a non-empty folder that is not an energyflow run ({shown}); "
            "choose an empty or new folder, or pass --overwrite to write the run files there"
        )


def _saved_run(out: Path) -> RunSettings:
    saved = read_config(out)
    if saved is None or not (out / CHECKPOINT).exists():
        raise ValueError(f"--resume: {out} holds no checkpointed energyflow run")
    return RunSettings.from_json(saved, str(out / CONFIG))


def _check_extends(out: Path, settings: RunSettings, given: dict) -> None:
    """A finished run resumes only to go further: more steps or a longer time budget than it
    stopped at (the message names why it stopped)."""
    if not (out / MODEL).exists():
        return
    saved = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)["state"]
    step, seconds, why = saved["step"], saved["seconds"], saved.get("stopped_by") or "steps"
    train = settings.train
    more_steps = "steps" in given.get("train", {}) and (train.steps or 0) > step
    more_time = "time_budget" in given.get("train", {}) and (train.time_budget or 0) > seconds
    if not (more_steps or more_time):
        reasons = {
            "steps": f"its {step} steps",
            "time_budget": f"its time budget of {settings.train.time_budget:g} s ({step} steps)"
            if settings.train.time_budget
            else f"its budget ({step} steps)",
            "patience": f"early, after {step} steps without validation gains (--patience)",
        }
        raise ValueError(
            f"--resume: the run already finished: it stopped at {reasons.get(why, why)}; pass "
            f"--steps N > {step} or --time-budget S > {seconds:.0f} to extend it"
        )


def _start_line(model, dataset, settings: RunSettings, device: torch.device) -> str:
    rows = len(dataset.train)
    held_out = len(split_validation(rows, settings.train.val_fraction, settings.train.seed)[1])
    processes = distributed.world_size()
    length = (
        f"{settings.train.time_budget:g} s"
        + (f" or {settings.train.steps} steps" if settings.train.steps else "")
        if settings.train.time_budget
        else f"{settings.train.planned_steps()} steps"
    )
    return (
        f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters())} "
        f"parameters) on {dataset.name}: {rows - held_out} training rows + {held_out} validation "
        f"rows, {dataset.features} features, for {length} on {device}"
        + (f" x {processes} processes" if processes > 1 else "")
    )


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    given = {group: given_settings(args, kind, f"{group}.") for group, kind in GROUPS.items()}
    device = resolve_device(given["train"].get("device", "auto"))
    distributed.init_from_environment(device)
    leader = distributed.rank() == 0  # under torchrun, rank 0 alone checks and writes the folder
    if leader:
        check_not_busy(out)
    saved = _saved_run(out) if args.resume else None
    data = given["data"].get("data")
    if data is not None and data not in BUILTIN:  # stored absolute: eval --run works anywhere
        given["data"]["data"] = str(Path(data).resolve())
    if saved is None:
        if data is None:
            raise ValueError("train needs --data (a built-in name or a .npy/.csv file)")
        if leader:
            _check_new_folder(out, args.overwrite)
    settings, dataset = resolve(given, saved, lambda s: dataset_of(s.data, s.train.seed))
    if args.resume and leader:
        _check_extends(out, settings, given)
    torch.manual_seed(settings.train.seed)
    model = model_of(settings.model, dataset)
    context = None if dataset.context_train is None else torch.as_tensor(dataset.context_train)
    check_setup(model, settings.train, torch.as_tensor(dataset.train), context)
    with RunLock(out) if leader else contextlib.nullcontext():
        if leader and not args.resume:  # another run may have started since the checks
            _check_new_folder(out, args.overwrite)
        if leader:
            atomic_write_json(settings.to_json(), out / CONFIG)
            print(_start_line(model, dataset, settings, device))
        try:
            state = fit(
                model,
                dataset.train,
                context=dataset.context_train,
                config=settings.train,
                checkpoint=out / CHECKPOINT,
                resume=args.resume,
                evaluate=lambda m: evaluate(m, dataset, rows=1000),
            )
        except FloatingPointError as err:
            raise FloatingPointError(
                f"{err}; training stopped, and {out / CHECKPOINT} keeps the last good "
                "checkpoint (if one was written)"
            ) from None
        if not leader:
            return 0
        model.save(out / MODEL)  # the run is complete from here on
        print(f"model:   {out / MODEL} (stopped by {state.stopped_by} after {state.step} steps)")
        try:
            result = write_report(model, dataset, out, state)
        except Exception as err:  # noqa: BLE001 - the finished model must not be stranded
            if args.debug:
                raise
            print(
                f"energyflow: warning: the model is saved, but judging it failed ({err}); "
                f"write the report again with `energyflow eval --run {out}`",
                file=sys.stderr,
            )
            return 0
        print(summary_line(result))
        print(f"report:  {out / 'metrics.json'}, {out / 'samples.png'}, {out / 'loss_curve.png'}")
    return 0
