"""Image study: the image model against flat models on 8 x 8 digits, and an MNIST-sized run.

Part ``digits`` (scikit-learn's 8 x 8 digits as 1 x 8 x 8 images, held-out images as the
judge's data; 3 seeds, the same wall-clock budget for every model):

- ``energyflow train --data digits-images --time-budget B`` (the image model, CLI defaults);
- the same with ``--class-conditional`` (the digit as context): also the accuracy of a
  classifier trained on real images when it classifies the samples drawn for each held-out
  image's label;
- ``energyflow train --data digits-images --model saef`` (the flat SemiAutoregressiveGenerator
  on the flattened pixels, CLI defaults);
- zuko's NSF and MAF at their documented defaults on the flattened pixels, trained by maximum
  likelihood through the same loop (validation split, best weights, cosine schedule).

Every model draws one sample per held-out image (the conditional one for that image's label),
judged by ``energyflow.metrics.judge`` (C2ST of boosted trees and k-NN, the stronger first).
Writes study_images.{json,md} and study_images.png (sample grids of seed 0).

Part ``ablation``: the image model's defaults against one change at a time (block side,
samples per image, learning rate, width), judged as above, to choose the recipe.

Part ``mnist``: one run at MNIST size (28 x 28 images, 4 x 4 blocks, the CLI's defaults) on
synthetic images (random strokes), for the time per training step and the sampling throughput.

    python benchmarks/study_images.py --part digits --budget 60 [--models "image (CLI defaults)"]
    python benchmarks/study_images.py --part ablation --budget 60 --seeds 0
    python benchmarks/study_images.py --part mnist --budget 120
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _zuko import ZukoFlow
from study_likelihood_free import MLE, SEEDS, summarise, train

from _common import RESULTS, machine_description
from energyflow import metrics
from energyflow.cli import main as cli_main
from energyflow.models import load_model
from energyflow.training.data import load_dataset
from energyflow.training.plots import save_samples_png

CLI_MODELS = {
    "image (CLI defaults)": [],
    "image, --standardisation moments": ["--standardisation", "moments"],
    "image, class-conditional": ["--class-conditional"],
    "image, the earlier recipe (--hidden 64 64 64 --batch-size 512)": (
        "--hidden 64 64 64 --batch-size 512".split()
    ),
    "flat SAEF (CLI defaults, --model saef)": ["--model", "saef"],
}
ZUKO_MODELS = {"zuko NSF (defaults, MLE)": "NSF", "zuko MAF (defaults, MLE)": "MAF"}


def _cli_run(scratch: Path, label: str, seed: int, budget: float) -> tuple:
    out = scratch / f"{len(list(scratch.iterdir()))}"
    args = ["train", "--data", "digits-images", "--out", str(out), "--seed", str(seed)]
    cli_main(args + ["--time-budget", str(budget), *CLI_MODELS[label]])
    steps = json.loads((out / "metrics.json").read_text())["steps"]
    return load_model(out / "model.pt"), steps


def run_digits(budget: float, models: list[str], stored: dict) -> dict:
    """The rows of ``models`` (all when empty) run again; the others kept from ``stored``."""
    rows, shown = [], {}
    chosen = [m for m in [*CLI_MODELS, *ZUKO_MODELS] if not models or m in models]
    with tempfile.TemporaryDirectory() as scratch:
        for label in chosen:
            conditional = "--class-conditional" in CLI_MODELS.get(label, [])
            per_seed = []
            for seed in SEEDS:
                dataset = load_dataset("digits-images", seed=seed, class_conditional=conditional)
                test = torch.as_tensor(dataset.test)
                if label in CLI_MODELS:
                    model, steps = _cli_run(Path(scratch), label, seed, budget)
                else:
                    torch.manual_seed(seed)
                    model = ZukoFlow(ZUKO_MODELS[label], dataset.features)
                    steps = train(model, dataset, MLE, budget, seed)["steps"]
                torch.manual_seed(1000 + seed)
                started = time.perf_counter()
                with torch.no_grad():
                    if conditional:
                        samples = model.sample((), torch.as_tensor(dataset.context_test))
                    else:
                        samples = model.sample((len(test),))
                seconds = time.perf_counter() - started
                result = {"steps": steps, "sample_seconds": seconds,
                          **metrics.judge(samples, test, seed=seed)}  # fmt: skip
                if conditional:
                    result.update(
                        metrics.class_accuracy(
                            samples, dataset.labels_test, dataset.train, dataset.labels_train,
                            held_out=test, held_out_labels=dataset.labels_test,
                        )
                    )  # fmt: skip
                per_seed.append(result)
                if seed == SEEDS[0]:
                    shown[label] = (samples.numpy(), dataset)
            row = {"model": label, "budget": budget, "runs": per_seed}
            row.update({key: summarise([r[key] for r in per_seed]) for key in per_seed[0]})
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
            rows.append(row)
    order = [*CLI_MODELS, *ZUKO_MODELS]
    for label, (samples, dataset) in shown.items():
        labels = dataset.labels_test if dataset.context_test is not None else None
        save_samples_png(
            RESULTS / f"study_images_{order.index(label)}.png", samples, dataset.test,
            dataset.image_shape, label, labels=labels,
        )  # fmt: skip
    kept = [r for r in stored.get("rows", []) if r["model"] not in chosen]
    rows = sorted(kept + rows, key=lambda r: order.index(r["model"]))
    return {"rows": rows, "grids": [f"study_images_{i}.png" for i in range(len(order))]}


ABLATION = {
    "image (CLI defaults)": [],
    "--patch 1 (an 8 x 8 grid of pixels)": ["--patch", "1"],
    "--samples-per-target 4": ["--samples-per-target", "4"],
    "--lr 1e-3": ["--lr", "1e-3"],
    "--hidden 64 64 64 64 (narrower)": ["--hidden", "64", "64", "64", "64"],
    "--hidden 128 128 128 (shallower)": ["--hidden", "128", "128", "128"],
    "--batch-size 64": ["--batch-size", "64"],
    "--beta 1": ["--beta", "1"],
}


def run_ablation(budget: float, seeds: list[int]) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, flags in ABLATION.items():
            per_seed = []
            for seed in seeds:
                dataset = load_dataset("digits-images", seed=seed)
                out = Path(scratch) / f"{len(rows)}-{seed}"
                args = ["train", "--data", "digits-images", "--out", str(out), "--seed", str(seed)]
                cli_main(args + ["--time-budget", str(budget), *flags])
                steps = json.loads((out / "metrics.json").read_text())["steps"]
                torch.manual_seed(1000 + seed)
                with torch.no_grad():
                    samples = load_model(out / "model.pt").sample((len(dataset.test),))
                test = torch.as_tensor(dataset.test)
                per_seed.append({"steps": steps, **metrics.judge(samples, test, seed=seed)})
            row = {"variant": label, "budget": budget, "runs": per_seed}
            row.update({key: summarise([r[key] for r in per_seed]) for key in per_seed[0]})
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
            rows.append(row)
    return {"rows": rows, "seeds": seeds}


def synthetic_strokes(n: int, side: int = 28, seed: int = 0) -> np.ndarray:
    """``n`` images (n, 1, side, side) of 3 random thick line segments each, in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1) + 0.5
    images = np.zeros((n, side, side), dtype=np.float32)
    for _ in range(3):
        a, b = rng.uniform(4, side - 4, (n, 2)), rng.uniform(4, side - 4, (n, 2))
        ab = b - a
        t = np.clip(
            np.einsum("nijk,nk->nij", grid[None] - a[:, None, None], ab)
            / (ab * ab).sum(-1)[:, None, None],
            0,
            1,
        )
        nearest = a[:, None, None] + t[..., None] * ab[:, None, None]
        distance = np.linalg.norm(grid[None] - nearest, axis=-1)
        images = np.maximum(images, np.clip(2.0 - distance, 0, 1))
    return images[:, None]


def run_mnist(budget: float) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "strokes.npy"
        np.save(data, synthetic_strokes(4000))
        out = Path(scratch) / "run"
        args = ["train", "--data", str(data), "--out", str(out), "--time-budget", str(budget)]
        cli_main(args)
        report = json.loads((out / "metrics.json").read_text())
        config = json.loads((out / "config.json").read_text())
        model = load_model(out / "model.pt")
        model.sample((16,))
        started = time.perf_counter()
        model.sample((1000,))
        seconds = time.perf_counter() - started
        picture = RESULTS / "study_images_mnist_size.png"
        picture.write_bytes((out / "samples.png").read_bytes())
    return {
        "model": config["model"],
        "batch_size": config["train"]["batch_size"],
        "steps": report["steps"],
        "seconds_per_step": report["seconds_per_step"],
        "samples_per_second": 1000 / seconds,
        "c2st": report["c2st"],
        "budget": budget,
        "grid": picture.name,
    }


def _cell(summary, digits: int = 3) -> str:
    mean, sd = summary
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def markdown(machine: dict, saved: dict) -> str:
    lines = [
        "# Image energy flows on 8 x 8 digits",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, {machine['date']}.",
        "",
    ]
    if "digits" in saved:
        digits = saved["digits"]
        lines += [
            f"scikit-learn's digits as 1 x 8 x 8 images, {digits['rows'][0]['budget']:g} s of "
            "training per run on this machine, 3 seeds (mean +- sd), one sample per held-out "
            "image (359), judged against the held-out images (C2ST 0.5 is best; precision, "
            "recall, coverage 1 is best). Image model: `energyflow train --data digits-images "
            "--time-budget B` (2 x 2 blocks, a 4 x 4 grid). zuko flows at their documented "
            "defaults, maximum likelihood.",
            "",
            "| model | steps | C2ST | C2ST boosted trees | C2ST k-NN | precision | recall "
            "| coverage | class accuracy (real images) | sampling s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in digits["rows"]:
            accuracy = (
                f"{_cell(row['class_accuracy'])} ({row['class_accuracy_real'][0]:.3f})"
                if "class_accuracy" in row
                else ""
            )
            lines.append(
                f"| {row['model']} | {row['steps'][0]:.0f} | {_cell(row['c2st'])} | "
                f"{_cell(row['c2st_boosted_trees'])} | {_cell(row['c2st_knn'])} | "
                f"{_cell(row['precision'])} | {_cell(row['recall'])} | "
                f"{_cell(row['coverage'])} | {accuracy} | {row['sample_seconds'][0]:.2f} |"
            )
        lines += [""] + [f"![{name}]({name})" for name in digits["grids"]] + [""]
    if "ablation" in saved:
        ablation = saved["ablation"]
        note = f" {ablation['note']}" if "note" in ablation else ""  # when its defaults differ
        lines += [
            "## Ablation of the image model's defaults",
            "",
            f"`energyflow train --data digits-images --time-budget "
            f"{ablation['rows'][0]['budget']:g}` with one change each, seeds "
            f"{ablation['seeds']}, judged as above.{note}",
            "",
            "| variant | steps | C2ST | C2ST boosted trees | C2ST k-NN | precision | recall |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in ablation["rows"]:
            lines.append(
                f"| {row['variant']} | {row['steps'][0]:.0f} | {_cell(row['c2st'])} | "
                f"{_cell(row['c2st_boosted_trees'])} | {_cell(row['c2st_knn'])} | "
                f"{_cell(row['precision'])} | {_cell(row['recall'])} |"
            )
        lines.append("")
    if "mnist" in saved:
        run = saved["mnist"]
        model = run["model"]
        lines += [
            "## MNIST size (28 x 28, 4 x 4 blocks)",
            "",
            f"One run of `energyflow train --data strokes.npy --time-budget "
            f"{run['budget']:g}` on 4000 synthetic "
            f"28 x 28 images (3 random strokes each): {model['patch']} x {model['patch']} blocks "
            f"(a 7 x 7 grid), {len(model['hidden'])} layers of {model['hidden'][0]} channels, "
            f"batch {run['batch_size']}: {run['seconds_per_step']:.2f} s per training step "
            f"({run['steps']} steps), {run['samples_per_second']:.0f} images per second sampled "
            f"(all 49 blocks, cached), C2ST {run['c2st']:.3f}.",
            "",
            f"![samples]({run['grid']})",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("digits", "ablation", "mnist"), required=True)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="ablation")
    parser.add_argument(
        "--models", nargs="+", default=[], help="digits: run only these rows again (by label)"
    )
    args = parser.parse_args()
    stored = RESULTS / "study_images.json"
    saved = json.loads(stored.read_text()) if stored.exists() else {}
    saved["machine"] = machine_description("cpu")
    if args.part == "digits":
        saved["digits"] = run_digits(args.budget, args.models, saved.get("digits", {}))
    elif args.part == "ablation":
        saved["ablation"] = run_ablation(args.budget, args.seeds)
    else:
        saved["mnist"] = run_mnist(args.budget)
    stored.write_text(json.dumps(saved, indent=1))
    (RESULTS / "study_images.md").write_text(markdown(saved["machine"], saved))
    print((RESULTS / "study_images.md").read_text())


if __name__ == "__main__":
    main()
