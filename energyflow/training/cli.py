"""The ``energyflow`` command line (also ``python -m energyflow``): train, sample, eval.

    energyflow train --data moons --model saef --blocks 2 --steps 2000 --out runs/moons
    energyflow train --data digits --model affine --blocks 8 --objective mle --out runs/digits-mle
    energyflow train --data my.csv --context-cols label --estimator score --out runs/mine
    energyflow train --out runs/moons --resume               # continue a checkpointed run
    energyflow sample --run runs/moons --n 10000 --out samples.npy
    energyflow eval --run runs/moons

A run folder holds config.json, checkpoint.pt (atomic, periodic), model.pt, metrics.json and
samples.png. Bad data stops the command before anything in the folder is written.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from energyflow._io import atomic_write_bytes, atomic_write_json
from energyflow.models import MODELS, GenerativeModel, build_model, load_model
from energyflow.training import metrics
from energyflow.training.data import BUILTIN, Dataset, load_dataset
from energyflow.training.fit import ESTIMATORS, OBJECTIVES, TrainConfig, check_setup, fit
from energyflow.training.plots import save_samples_png


def model_for_run(run: dict, dataset: Dataset) -> GenerativeModel:
    """The model a run's settings describe, sized for ``dataset``."""
    blocks = run["blocks"] if run["blocks"] > 0 else dataset.features
    return build_model(
        run["model"],
        dataset.features,
        blocks=min(blocks, dataset.features),
        context_features=dataset.context_features,
        hidden_features=tuple(run["hidden"]),
        transforms=run["transforms"],
        noise_features=run.get("noise_features") or None,
    )


def evaluate(
    model: GenerativeModel, dataset: Dataset, *, rows: int = 2000, full: bool = False
) -> dict:
    """Test metrics of a model; ``full`` adds C2ST, MMD and the likelihoods."""
    test = torch.as_tensor(dataset.test[:rows])
    context = None if dataset.context_test is None else torch.as_tensor(dataset.context_test[:rows])
    with torch.no_grad():
        samples = model.sample((len(test),)) if context is None else model.sample((), context)
    result = {"test_energy_distance": metrics.sample_energy_distance(samples, test)}
    if full:
        result["mmd"] = metrics.mmd(samples, test)
        result["c2st_accuracy"] = metrics.c2st(samples, test)
        if context is None:
            many = model.sample((10000,))
            result["kde_log_likelihood_estimate"] = metrics.kde_log_likelihood(many, test)
        if model.has_density:
            result["log_likelihood"] = metrics.log_likelihood(model, test, context)
    return result


def _fail(message: str) -> int:
    print(f"energyflow: error: {message}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    checkpoint = out / "checkpoint.pt"
    if args.resume:
        if not (out / "config.json").exists() or not checkpoint.exists():
            return _fail(f"--resume: {out} holds no checkpointed run (config.json + checkpoint.pt)")
        run = json.loads((out / "config.json").read_text())
    else:
        if args.data is None:
            return _fail("train needs --data (a built-in name or a .npy/.csv file)")
        if checkpoint.exists() or (out / "model.pt").exists():
            return _fail(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        run = {
            key: value
            for key, value in vars(args).items()
            if key not in ("func", "resume", "out", "command")
        }
    try:
        dataset = load_dataset(
            run["data"], n_train=run["n_train"], seed=run["seed"], context_cols=run["context_cols"]
        )
    except ValueError as err:
        return _fail(str(err))
    torch.manual_seed(run["seed"])
    config = TrainConfig(
        objective=run["objective"],
        estimator=run["estimator"],
        steps=run["steps"],
        batch_size=run["batch_size"],
        lr=run["lr"],
        seed=run["seed"],
        eval_every=run["eval_every"],
        checkpoint_every=run["checkpoint_every"],
        samples_per_target=run["samples_per_target"],
    )
    try:
        model = model_for_run(run, dataset)
        context = None if dataset.context_train is None else torch.as_tensor(dataset.context_train)
        check_setup(model, config, torch.as_tensor(dataset.train), context)
    except ValueError as err:
        return _fail(str(err))
    if not args.resume:
        atomic_write_json(run, out / "config.json")
    print(
        f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters())} "
        "parameters) on "
        f"{dataset.name}: {len(dataset.train)} train rows, {dataset.features} features"
    )
    state = fit(
        model,
        dataset.train,
        context=dataset.context_train,
        config=config,
        checkpoint=checkpoint,
        resume=args.resume,
        evaluate=lambda m: evaluate(m, dataset, rows=1000),
    )
    model.save(out / "model.pt")
    result = {
        "steps": state.step,
        "seconds": state.seconds,
        "seconds_per_step": state.seconds / state.step,
        "final_loss": state.history[-1]["loss"],
        **evaluate(model, dataset, full=True),
        "history": [h for h in state.history if "test_energy_distance" in h],
    }
    atomic_write_json(result, out / "metrics.json")
    with torch.no_grad():
        if dataset.context_test is None:
            shown = model.sample((2000,)).numpy()
        else:
            shown = model.sample((), torch.as_tensor(dataset.context_test[:2000])).numpy()
    save_samples_png(
        out / "samples.png", shown, dataset.test[:2000], dataset.image_shape, type(model).__name__
    )
    print(
        f"test energy distance {result['test_energy_distance']:.4f}, C2ST accuracy "
        f"{result['c2st_accuracy']:.3f}"
    )
    print(
        f"picture: {out / 'samples.png'}\nmetrics: {out / 'metrics.json'}\nmodel:   "
        f"{out / 'model.pt'}"
    )
    return 0


def _load_run(run_dir: str) -> tuple[GenerativeModel, dict]:
    path = Path(run_dir)
    if not (path / "model.pt").exists():
        raise ValueError(f"--run {path}: no model.pt (train first, or wait for the run to finish)")
    return load_model(path / "model.pt"), json.loads((path / "config.json").read_text())


def cmd_sample(args: argparse.Namespace) -> int:
    try:
        model, _ = _load_run(args.run)
    except ValueError as err:
        return _fail(str(err))
    context = None
    if model.context_features:
        if args.context is None:
            return _fail(
                "this model is conditional: pass --context FILE.npy with one context row per sample"
            )
        context = torch.as_tensor(np.load(args.context), dtype=torch.float32)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    samples = model.sample((args.n,)) if context is None else model.sample((), context)
    seconds = time.perf_counter() - start
    buffer = io.BytesIO()
    np.save(buffer, samples.numpy())
    atomic_write_bytes(buffer.getvalue(), Path(args.out))
    print(f"{len(samples.reshape(-1, model.features))} samples in {seconds:.2f} s -> {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        model, run = _load_run(args.run)
        dataset = load_dataset(
            args.data or run["data"],
            n_train=run["n_train"],
            seed=run["seed"],
            context_cols=run["context_cols"],
        )
    except ValueError as err:
        return _fail(str(err))
    torch.manual_seed(args.seed)
    print(json.dumps(evaluate(model, dataset, full=True), indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="energyflow", description="Train and sample likelihood-free energy flows."
    )
    commands = top.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model")
    train.add_argument(
        "--data",
        default=None,
        help=f"built-in ({', '.join(BUILTIN)}) or a .npy/.csv file (not with --resume)",
    )
    train.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="saef",
        help="saef: semi-autoregressive generator; affine: block affine flow",
    )
    train.add_argument(
        "--blocks", type=int, default=2, help="K feature blocks (0: one per feature)"
    )
    train.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="energy",
        help="mle needs a model with a density (affine)",
    )
    train.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=None,
        help="default: distance, or score with context",
    )
    train.add_argument("--samples-per-target", type=int, default=2)
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--batch-size", type=int, default=512)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    train.add_argument("--transforms", type=int, default=4, help="affine flow only")
    train.add_argument(
        "--noise-features", type=int, default=0, help="saef only: noise units (0: one per feature)"
    )
    train.add_argument(
        "--context-cols", nargs="+", default=[], help="columns (index or CSV name) used as context"
    )
    train.add_argument("--n-train", type=int, default=20000, help="rows drawn for the 2-D toys")
    train.add_argument("--eval-every", type=int, default=500)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument(
        "--resume", action="store_true", help="continue the checkpointed run in --out"
    )
    train.set_defaults(func=cmd_train)
    sample = commands.add_parser("sample", help="draw samples from a trained model")
    sample.add_argument("--run", required=True)
    sample.add_argument("--n", type=int, default=10000)
    sample.add_argument("--context", default=None, help=".npy of context rows (conditional models)")
    sample.add_argument("--out", required=True, help=".npy file")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample)
    evaluation = commands.add_parser("eval", help="test metrics of a trained model")
    evaluation.add_argument("--run", required=True)
    evaluation.add_argument("--data", default=None, help="default: the run's data")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.set_defaults(func=cmd_eval)
    return top


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
