"""The ``energyflow`` command line (also ``python -m energyflow``): train, sample, eval, posterior
(``energyflow.inference.cli``).

    energyflow train --data moons --model saef --blocks 2 --steps 2000 --out runs/moons
    energyflow train --data digits --model affine --blocks 8 --objective mle --out runs/digits-mle
    energyflow train --data my.csv --context-cols label --estimator score --out runs/mine
    energyflow train --data digits --time-budget 60 --val-fraction 0.1 --device cuda
    torchrun --nproc-per-node 4 -m energyflow train --data digits --out runs/ddp  # README
    energyflow train --out runs/moons --resume               # continue a checkpointed run
    energyflow train --out runs/moons --resume --steps 4000  # extend a run
    energyflow sample --run runs/moons --n 10000 --out samples.npy
    energyflow eval --run runs/moons

A run folder (``energyflow.training.run_folder``) holds config.json, checkpoint.pt (atomic,
periodic), model.pt, metrics.json and samples.png, and is locked while a run uses it. Every
argument and the data are checked before anything is written; a bad input ends in one line
naming it (``--debug`` shows the traceback). The run is complete once model.pt is written:
metrics that fail after it are reported and can be re-run with ``eval``. Under torchrun every
process trains its share of the batch and rank 0 alone checks, locks and writes the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from energyflow import distributed, metrics
from energyflow._io import atomic_npy, atomic_write_json, read_matrix_npy
from energyflow.models import MODELS, GenerativeModel, build_model, load_model
from energyflow.training.config import (
    ESTIMATORS,
    OBJECTIVES,
    TrainConfig,
    check_setup,
    default_estimator,
)
from energyflow.training.config import with_recipe as with_recipe_config
from energyflow.training.data import BUILTIN, Dataset, load_dataset
from energyflow.training.device import PRECISIONS, resolve_device
from energyflow.training.fit import fit
from energyflow.training.plots import save_samples_png
from energyflow.training.recipe import recommended_model_options
from energyflow.training.run_folder import (
    CHECKPOINT,
    CONFIG,
    FORMAT,
    METRICS,
    MODEL,
    PICTURE,
    RunLock,
    check_not_busy,
    foreign_entries,
    read_config,
)

# train options a resumed run may change (everything else must match the saved run)
RESUMABLE = {
    "steps",
    "time_budget",
    "device",
    "compile",
    "out",
    "resume",
    "debug",
    "overwrite",
    "func",
    "command",
}
SAMPLE_CHUNK_ROWS = 65536


def with_recipe(run: dict, dataset: Dataset) -> dict:
    """``run`` with the settings left unset (None) taken from the recommended recipe for
    ``dataset`` (``energyflow.training.recipe``), so config.json records what ran."""
    model = recommended_model_options(dataset.features, run["model"])
    options = {
        "blocks": model["blocks"],
        "hidden": list(model["hidden_features"]),
        "noise_features": model.get("noise_features", 0),
        "mixture_components": model.get("mixture_components", 0),
        "residual": model.get("residual", False),
    }
    training = with_recipe_config(
        TrainConfig(**{name: run[name] for name in _CONFIG_FIELDS if name in run}),
        len(dataset.train),
        dataset.features,
    )
    filled = {**run}
    for name, value in {**options, **asdict(training)}.items():
        if filled.get(name) is None and name in run:
            filled[name] = value
    return filled


def model_for_run(run: dict, dataset: Dataset) -> GenerativeModel:
    """The model a run's settings describe, sized for ``dataset``."""
    blocks = run["blocks"] if run["blocks"] > 0 else dataset.features
    return build_model(
        run["model"],
        dataset.features,
        blocks=blocks,
        context_features=dataset.context_features,
        hidden_features=tuple(run["hidden"]),
        transforms=run["transforms"],
        noise_features=run.get("noise_features") or None,
        mixture_components=run.get("mixture_components") or 0,
        residual=run.get("residual") or False,
    )


def evaluate(
    model: GenerativeModel, dataset: Dataset, *, rows: int = 5000, full: bool = False
) -> dict:
    """Test metrics of a model (sampled on its device, scored on the CPU): the energy distance;
    with ``full``, the strong judges (``energyflow.metrics.judge``: tree and k-NN C2ST,
    precision/recall, density/coverage, off-support share), the sbibm MLP C2ST as a named extra,
    MMD and the likelihoods."""
    test = torch.as_tensor(dataset.test[:rows])
    context = None if dataset.context_test is None else torch.as_tensor(dataset.context_test[:rows])
    device = model.loc.device
    with torch.no_grad():
        if context is None:
            samples = model.sample((len(test),)).cpu()
        else:
            samples = model.sample((), context.to(device)).cpu()
    result = {"test_energy_distance": metrics.sample_energy_distance(samples, test)}
    if full:
        result.update(metrics.judge(samples, test))
        result["c2st_mlp"] = metrics.c2st_mlp(samples, test)
        result["mmd"] = metrics.mmd(samples, test)
        if context is None:
            many = model.sample((10000,)).cpu()
            result["kde_log_likelihood_estimate"] = metrics.kde_log_likelihood(many, test)
        if model.has_density:
            result["log_likelihood"] = metrics.log_likelihood(model, test, context)
    return result


def _load_data(run: dict) -> Dataset:
    return load_dataset(
        run["data"],
        n_train=run["n_train"],
        seed=run["seed"],
        context_cols=run["context_cols"],
        header=run.get("header"),
    )


def _check_features(run: dict, dataset: Dataset) -> None:
    if run["blocks"] > dataset.features:
        raise ValueError(
            f"--blocks {run['blocks']} exceeds the {dataset.features} features of the data "
            "(0 means one block per feature)"
        )


def _resumed_run(args: argparse.Namespace, given: set[str], out: Path) -> dict:
    """The saved settings of the run in ``out``, with ``--steps`` applied; refuses flags that
    contradict them."""
    run = read_config(out)
    if run is None or not (out / CHECKPOINT).exists():
        raise ValueError(f"--resume: {out} holds no checkpointed energyflow run")

    def differs(name: str) -> bool:
        value = getattr(args, name)
        if name == "data" and value not in BUILTIN:
            value = str(Path(value).resolve())
        return value != run.get(name)

    contradicting = [
        f"--{name.replace('_', '-')} {getattr(args, name)!r} (saved: {run.get(name)!r})"
        for name in sorted(given - RESUMABLE)
        if differs(name)
    ]
    if contradicting:
        raise ValueError(
            "--resume continues the saved run; these flags contradict it: "
            + "; ".join(contradicting)
            + ". Drop them (only --steps may change, to extend the run)"
        )
    steps = args.steps if "steps" in given else run["steps"]
    if steps <= run["steps"] and (out / MODEL).exists():
        raise ValueError(
            f"--resume: the run already finished its {run['steps']} steps; pass "
            f"--steps N > {run['steps']} to extend it"
        )
    return {**run, "steps": steps}


def _run_settings(args: argparse.Namespace) -> dict:
    """The settings a new run saves: every train option but the per-invocation ones."""
    if args.data is None:
        raise ValueError("train needs --data (a built-in name or a .npy/.csv file)")
    run = {
        key: value
        for key, value in vars(args).items()
        if key not in ("func", "resume", "out", "command", "debug", "overwrite")
    }
    if run["data"] not in BUILTIN:
        run["data"] = str(Path(run["data"]).resolve())  # eval --run works from anywhere
    return {"format": FORMAT, **run}


def _new_run(args: argparse.Namespace, out: Path) -> dict:
    run = _run_settings(args)
    if read_config(out) is not None or (out / CHECKPOINT).exists() or (out / MODEL).exists():
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    foreign = foreign_entries(out)
    if foreign and not args.overwrite:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"--out {out} is a non-empty folder that is not an energyflow run ({shown}); "
            "choose an empty or new folder, or pass --overwrite to write the run files there"
        )
    return run


# TrainConfig fields a run's settings carry under the same name (runs saved before a field
# existed get the TrainConfig default)
_CONFIG_FIELDS = (
    "objective",
    "estimator",
    "beta",
    "samples_per_target",
    "hybrid_weight",
    "kernel_weight",
    "kernel_bandwidth",
    "variogram_weight",
    "variogram_power",
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "time_budget",
    "ema",
    "val_fraction",
    "val_every",
    "patience",
    "seed",
    "eval_every",
    "checkpoint_every",
    "device",
    "precision",
    "compile",
)


# what runs saved before these settings existed trained with (so a resume continues them)
_EARLIER_DEFAULTS = {"beta": 1.0, "val_fraction": 0.0}


def _train_config(run: dict, conditional: bool) -> TrainConfig:
    saved = {name: run[name] for name in _CONFIG_FIELDS if name in run}
    config = TrainConfig(**{**_EARLIER_DEFAULTS, **saved})
    estimator = config.estimator or default_estimator(conditional)
    if config.objective == "energy" and estimator == "score" and config.samples_per_target < 2:
        raise ValueError(
            f"--samples-per-target {config.samples_per_target}: the energy score needs at "
            "least 2 samples per target"
        )
    return config


def cmd_train(args: argparse.Namespace, given: set[str]) -> int:
    out = Path(args.out)
    distributed.init_from_environment(resolve_device(args.device))
    leader = distributed.rank() == 0  # under torchrun, rank 0 alone checks and writes the folder
    if leader:
        check_not_busy(out)
    if args.resume:
        run = _resumed_run(args, given, out)
    else:
        run = _new_run(args, out) if leader else _run_settings(args)
    run = {
        **run,
        **{name: getattr(args, name) for name in {"time_budget", "device", "compile"} & given},
    }
    dataset = _load_data(run)
    run = with_recipe(run, dataset)
    _check_features(run, dataset)
    torch.manual_seed(run["seed"])
    config = _train_config(run, dataset.context_features > 0)
    model = model_for_run(run, dataset)
    context = None if dataset.context_train is None else torch.as_tensor(dataset.context_train)
    check_setup(model, config, torch.as_tensor(dataset.train), context)
    with RunLock(out) if leader else contextlib.nullcontext():
        if leader and not args.resume:  # another run may have started since the checks
            _new_run(args, out)
        if leader:
            atomic_write_json(run, out / CONFIG)
            print(
                f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters())} "
                f"parameters) on {dataset.name}: {len(dataset.train)} train rows, "
                f"{dataset.features} features, {config.device} x {distributed.world_size()}"
            )
        try:
            state = fit(
                model,
                dataset.train,
                context=dataset.context_train,
                config=config,
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
        print(f"model:   {out / MODEL}")
        try:
            _report(model, dataset, state, out)
        except Exception as err:  # noqa: BLE001 - the finished model must not be stranded
            if args.debug:
                raise
            print(
                f"energyflow: warning: the model is saved, but evaluating it failed ({err}); "
                f"re-run the metrics with `energyflow eval --run {out}`",
                file=sys.stderr,
            )
    return 0


def _report(model: GenerativeModel, dataset: Dataset, state, out: Path) -> None:
    result = {
        "steps": state.step,
        "seconds": state.seconds,
        "seconds_per_step": state.seconds / max(state.step, 1),
        "final_loss": state.history[-1]["loss"] if state.history else None,
        **evaluate(model, dataset, full=True),
        "history": [h for h in state.history if "test_energy_distance" in h],
    }
    atomic_write_json(result, out / METRICS)
    with torch.no_grad():
        if dataset.context_test is None:
            shown = model.sample((2000,)).cpu().numpy()
        else:
            rows = torch.as_tensor(dataset.context_test[:2000]).to(model.loc.device)
            shown = model.sample((), rows).cpu().numpy()
    save_samples_png(
        out / PICTURE, shown, dataset.test[:2000], dataset.image_shape, type(model).__name__
    )
    print(
        f"test energy distance {result['test_energy_distance']:.4f}, C2ST {result['c2st']:.3f} "
        f"(boosted trees {result['c2st_boosted_trees']:.3f}, k-NN {result['c2st_knn']:.3f}), "
        f"precision {result['precision']:.3f}, recall {result['recall']:.3f}, "
        f"off-support share {result['off_support_share']:.4f} (data: 0.001)"
    )
    print(f"picture: {out / PICTURE}\nmetrics: {out / METRICS}")


def _load_run(run_dir: str, device: str) -> tuple[GenerativeModel, dict]:
    path = Path(run_dir)
    where = resolve_device(device)
    if not (path / MODEL).exists():
        raise ValueError(f"--run {path}: no model.pt (train first, or wait for the run to finish)")
    try:
        model = load_model(path / MODEL, map_location=where)
    except Exception as err:  # noqa: BLE001 - torch.load raises many kinds on a bad file
        raise ValueError(
            f"--run {path}: {MODEL} is not a readable energyflow model "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    run = read_config(path)
    if run is None:
        raise ValueError(f"--run {path}: no readable {CONFIG}")
    return model, run


def _read_context(path: Optional[str], model: GenerativeModel) -> torch.Tensor:
    if path is None:
        raise ValueError(
            "this model is conditional: pass --context FILE.npy with one context row per sample"
        )
    values = read_matrix_npy(path, "--context")
    if values.shape[1] != model.context_features:
        raise ValueError(
            f"--context {path}: expected a non-empty (rows, {model.context_features}) array, "
            f"got shape {values.shape}"
        )
    context = torch.as_tensor(values)
    return context.to(model.loc.device)


def cmd_sample(args: argparse.Namespace, given: set[str]) -> int:
    model, _ = _load_run(args.run, args.device)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a .npy file")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {out.parent} is not writable")
    context = None
    if model.context_features:
        context = _read_context(args.context, model)
        per_row = args.n or 1
        shape = (
            (per_row, len(context), model.features) if args.n else (len(context), model.features)
        )
    else:
        if args.context is not None:
            raise ValueError("--context was given but this model takes no context")
        per_row = args.n or 10000
        shape = (per_row, model.features)
    needed = math.prod(shape) * 4 + 4096
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise ValueError(
            f"--n {per_row}: the samples need {needed / 2**30:.1f} GiB but {out.parent} has "
            f"{free / 2**30:.1f} GiB free"
        )
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with atomic_npy(out, shape) as array:
        flat = array.reshape(-1, model.features) if context is None else array
        _fill_with_samples(model, flat, context, args.n is not None)
    seconds = time.perf_counter() - start
    print(f"{math.prod(shape[:-1])} samples in {seconds:.2f} s -> {out} (shape {shape})")
    return 0


def _fill_with_samples(
    model: GenerativeModel, array: np.ndarray, context: Optional[torch.Tensor], per_row: bool
) -> None:
    """Write samples into ``array`` in chunks (constant memory), with a progress bar."""
    if context is None:
        chunks = range(0, len(array), SAMPLE_CHUNK_ROWS)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            rows = min(SAMPLE_CHUNK_ROWS, len(array) - start)
            return slice(start, start + rows), model.sample((rows,))
    elif per_row:  # array (n, rows, D): k draws of every context row at a time
        k = max(1, SAMPLE_CHUNK_ROWS // len(context))
        chunks = range(0, len(array), k)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            count = min(k, len(array) - start)
            return slice(start, start + count), model.sample((count,), context)
    else:  # array (rows, D): one sample per context row
        chunks = range(0, len(array), SAMPLE_CHUNK_ROWS)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            rows = context[start : start + SAMPLE_CHUNK_ROWS]
            return slice(start, start + len(rows)), model.sample((), rows)

    with torch.no_grad():
        for start in tqdm(chunks, desc="sampling", unit="chunk", disable=len(chunks) < 4):
            where, values = draw(start)
            array[where] = values.cpu().numpy()


def cmd_eval(args: argparse.Namespace, given: set[str]) -> int:
    model, run = _load_run(args.run, args.device)
    dataset = _load_data({**run, "data": args.data or run["data"]})
    if dataset.features != model.features or dataset.context_features != model.context_features:
        raise ValueError(
            f"--data {args.data or run['data']}: {dataset.features} features and "
            f"{dataset.context_features} context columns, but the model has {model.features} "
            f"and {model.context_features}"
        )
    torch.manual_seed(args.seed)
    print(json.dumps(evaluate(model, dataset, full=True), indent=1))
    return 0


# ---- arguments ---------------------------------------------------------------------------------
def _bounded(kind: Callable, low: float, name: str, strict: bool = False) -> Callable:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            bound = f"> {low}" if strict else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


POSITIVE = _bounded(int, 1, "an integer")
NON_NEGATIVE = _bounded(int, 0, "an integer")
AT_LEAST_2 = _bounded(int, 2, "an integer")
AT_LEAST_10 = _bounded(int, 10, "an integer")
POSITIVE_FLOAT = _bounded(float, 0.0, "a number", strict=True)
NON_NEGATIVE_FLOAT = _bounded(float, 0.0, "a number")


def _in_range(low: float, high: float, low_open: bool) -> Callable:
    """A parser of numbers in (low, high) or [low, high)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value < high:
            opening = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {opening}{low:g}, {high:g}), got {text}")
        return value

    return parse


BETA = _in_range(0.0, 2.0, low_open=True)
FRACTION = _in_range(0.0, 1.0, low_open=False)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"energyflow {self.prog.split()[-1]}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    top = _Parser(prog="energyflow", description="Train and sample likelihood-free energy flows.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # no abbreviated options: --resume compares the options written out with the saved run
    train = commands.add_parser("train", help="train a model", parents=[common], allow_abbrev=False)
    add = train.add_argument
    add("--data", default=None, help=f"built-in ({', '.join(BUILTIN)}) or a .npy/.csv file")
    add("--model", choices=sorted(MODELS), default="saef", help="saef: generator; affine: flow")
    add(
        "--blocks", type=NON_NEGATIVE, default=None, help="K blocks (0: one per feature; recipe: 1)"
    )
    add("--objective", choices=OBJECTIVES, default="energy", help="mle/hybrid: --model affine")
    add("--estimator", choices=ESTIMATORS, default=None, help="default: distance (score: context)")
    add("--samples-per-target", type=AT_LEAST_2, default=2)
    add("--beta", type=BETA, default=None, help="exponent of the energy, in (0, 2) (recipe: 0.5)")
    add("--hybrid-weight", type=NON_NEGATIVE_FLOAT, default=1.0, help="NLL weight (hybrid)")
    add("--kernel-weight", type=NON_NEGATIVE_FLOAT, default=0.0, help="kernel score term (score)")
    add("--kernel-bandwidth", type=POSITIVE_FLOAT, default=0.5, help="its h, standardised units")
    add("--variogram-weight", type=NON_NEGATIVE_FLOAT, default=0.0, help="variogram term (score)")
    add("--variogram-power", type=POSITIVE_FLOAT, default=0.5, help="its order p, in (0, 2]")
    add("--steps", type=POSITIVE, default=2000)
    add("--batch-size", type=AT_LEAST_2, default=None, help="recipe: 1024 (D <= 8), else 512")
    add("--lr", type=POSITIVE_FLOAT, default=None, help="recipe: 3e-3 (energy), 1e-3 (mle)")
    add("--warmup-steps", type=NON_NEGATIVE, default=0, help="linear learning-rate warm-up")
    add("--time-budget", type=POSITIVE_FLOAT, default=None, help="seconds; the schedule ends there")
    add("--ema", type=FRACTION, default=0.0, help="weight-average decay for sampling (0: off)")
    add("--val-fraction", type=FRACTION, default=None, help="held out, best weights kept (0.1)")
    add("--val-every", type=POSITIVE, default=100)
    add("--patience", type=NON_NEGATIVE, default=0, help="validations without gain (0: no stop)")
    add("--hidden", type=POSITIVE, nargs="+", default=None, help="recipe: 3 x 256 (512 for D>=32)")
    add("--residual", action=argparse.BooleanOptionalAction, default=None, help="saef (recipe: on)")
    add("--transforms", type=POSITIVE, default=4, help="affine flow only")
    add("--noise-features", type=NON_NEGATIVE, default=None, help="saef only (recipe: 2 x D)")
    add(
        "--mixture-components",
        type=NON_NEGATIVE,
        default=None,
        help="saef only: discrete latent components (0: none; recipe: 16 for D <= 8, else 0)",
    )
    add("--context-cols", nargs="+", default=[], help="columns (index or CSV name) as context")
    add("--header", action=argparse.BooleanOptionalAction, default=None, help="CSV header row")
    add("--n-train", type=AT_LEAST_10, default=20000, help="rows drawn for the 2-D toys")
    add("--eval-every", type=NON_NEGATIVE, default=500)
    add("--checkpoint-every", type=NON_NEGATIVE, default=500)
    add("--seed", type=int, default=0)
    add("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:i")
    add("--precision", choices=PRECISIONS, default="fp32", help="bf16/fp16: autocast")
    add("--compile", action="store_true", help="torch.compile the model and loss")
    add("--out", required=True, help="run folder")
    add("--resume", action="store_true", help="continue (or, with --steps, extend) the run")
    add("--overwrite", action="store_true", help="allow a non-empty folder that is not a run")
    train.set_defaults(func=cmd_train)
    sample = commands.add_parser(
        "sample", help="draw samples from a trained model", parents=[common], allow_abbrev=False
    )
    sample.add_argument("--run", required=True)
    sample.add_argument(
        "--n",
        type=POSITIVE,
        default=None,
        help="samples (default 10000); with --context: samples per context row, giving "
        "(n, rows, D) (default: one per row, giving (rows, D))",
    )
    sample.add_argument("--context", default=None, help=".npy of context rows (conditional)")
    sample.add_argument("--out", required=True, help=".npy file")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu", help="where to sample: cpu, cuda[:i], auto")
    sample.set_defaults(func=cmd_sample)
    evaluation = commands.add_parser(
        "eval", help="test metrics of a model", parents=[common], allow_abbrev=False
    )
    evaluation.add_argument("--run", required=True)
    evaluation.add_argument("--data", default=None, help="default: the run's data")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--device", default="cpu", help="where to sample: cpu, cuda[:i], auto")
    evaluation.set_defaults(func=cmd_eval)
    from energyflow.inference.cli import add_posterior_command  # its imports load only here

    add_posterior_command(
        commands,
        common,
        {
            "positive": POSITIVE,
            "non_negative": NON_NEGATIVE,
            "at_least_2": AT_LEAST_2,
            "at_least_10": AT_LEAST_10,
            "positive_float": POSITIVE_FLOAT,
        },
    )
    return top


def _given_options(top: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]):
    """The destinations of the options written out in ``argv`` (not left at their defaults)."""
    sub = next(
        action.choices[args.command]
        for action in top._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    given = set()
    for action in sub._actions:
        for option in action.option_strings:
            if any(word == option or word.startswith(option + "=") for word in argv):
                given.add(action.dest)
    return given


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = parser()
    args = top.parse_args(argv)
    failed = True
    try:
        code = args.func(args, _given_options(top, args, argv))
        failed = False
        return code
    except (ValueError, OSError, FloatingPointError) as err:
        if args.debug:
            raise
        print(f"energyflow: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, FloatingPointError) else 2
    finally:
        distributed.finish(synchronise=not failed)


if __name__ == "__main__":
    sys.exit(main())
