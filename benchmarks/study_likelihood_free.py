"""Sample-quality study: what makes energy training good, and how it compares with likelihoods.

Part ``ablation`` (digits): one factor at a time from a base recipe (the defaults before this
study): batch size, estimator (distance / score m in {2, 4, 8} / sliced), beta, noise features,
width / depth / residual, learning rate, warm-up, weight averaging (EMA), K. Every cell: 3 seeds,
the same wall-clock budget, C2ST as the primary metric. Writes study_ablation.{json,md}.

Part ``combine``: the factors that helped alone, together (appended to the ablation's table).

Part ``compare`` (8gaussians, checkerboard, digits, breast_cancer): energyflow's recommended
recipe (``energyflow.training.recipe``, what ``fit`` and ``energyflow train`` use by default)
for the energy-trained SemiAutoregressiveGenerator and BlockAffineFlow, the hybrid objective,
the MLE-trained BlockAffineFlow, and zuko's MAF (4 transforms, hidden (128, 128), trained by
maximum likelihood through the same loop: validation split, best weights, cosine schedule).
Equal wall-clock budget per model, 3 seeds, mean +- sd of C2ST (primary), energy distance, MMD,
KDE and exact log-likelihood, sampling time. On digits it also records the weights every few
seconds and plots C2ST against wall-clock seconds (study_time_to_quality.png). Writes
study.{json,md} and study_<dataset>.png.

    python benchmarks/study_likelihood_free.py --part ablation --budget 20
    python benchmarks/study_likelihood_free.py --part compare --budget 60 --toy-budget 15
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from typing import Callable, Optional

import numpy as np
import torch
from _zuko import ZukoFlow

from _common import RESULTS, machine_description
from energyflow import metrics
from energyflow.models import BlockAffineFlow, GenerativeModel, SemiAutoregressiveGenerator
from energyflow.training.data import Dataset, load_dataset
from energyflow.training.fit import TrainConfig, fit

SEEDS = (0, 1, 2)
# maximum likelihood as every flow here trains: batch 256, lr 1e-3, 10% validation
MLE = TrainConfig(objective="mle", batch_size=256, lr=1e-3, val_fraction=0.1)
SNAPSHOT_SECONDS = 5.0


def zuko_maf(features: int) -> GenerativeModel:
    """zuko's MAF as the study's baseline: 4 transforms, hidden (128, 128)."""
    return ZukoFlow("MAF", features, transforms=4, hidden_features=(128, 128))


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def time_sampling(model: GenerativeModel, n: int = 10000) -> float:
    model.sample((100,))
    start = time.perf_counter()
    model.sample((n,))
    return time.perf_counter() - start


class Snapshots:
    """fit's ``evaluate`` hook: the (averaged) weights every SNAPSHOT_SECONDS of training."""

    def __init__(self) -> None:
        self.started, self.taken = time.perf_counter(), []

    def __call__(self, model: GenerativeModel) -> dict:
        seconds = time.perf_counter() - self.started
        if seconds >= SNAPSHOT_SECONDS * (len(self.taken) + 1):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.taken.append((seconds, state))
        return {}


def score(model: GenerativeModel, dataset: Dataset, seed: int, full: bool = True) -> dict:
    """Test judges of a trained model (``energyflow.metrics.judge``: the strong C2ST first);
    ``full`` adds the sbibm MLP C2ST, the distances, the likelihoods and the sampling time."""
    test = torch.as_tensor(dataset.test)
    torch.manual_seed(1000 + seed)
    samples = model.sample((max(2000, len(test)),))
    finite = torch.isfinite(samples).all(-1)
    if not bool(finite[: len(test)].all()):  # a diverged model: perfectly distinguishable
        return {"c2st": 1.0, "nonfinite_fraction": float((~finite).double().mean())}
    shown = samples[: len(test)]
    row = metrics.judge(shown, test, seed=seed)
    if not full:
        return row
    row["c2st_mlp"] = metrics.c2st_mlp(shown, test, seed=seed)
    row["energy_distance"] = metrics.sample_energy_distance(shown, test)
    row["mmd"] = metrics.mmd(shown, test)
    row["kde_log_likelihood"] = metrics.kde_log_likelihood(model.sample((10000,)), test)
    if model.has_density:
        with torch.no_grad():
            row["log_likelihood"] = float(model.log_prob(test).mean())
    row["sample_10k_seconds"] = time_sampling(model)
    return row


def train(
    model: GenerativeModel,
    dataset: Dataset,
    config: TrainConfig,
    budget: float,
    seed: int,
    snapshots: Optional[Snapshots] = None,
) -> dict:
    """Train for ``budget`` seconds (the schedule ends there; best validated weights kept)."""
    torch.manual_seed(seed)
    settings = {**config.__dict__, "steps": 10**9, "time_budget": budget, "seed": seed}
    if snapshots is not None:
        settings["eval_every"] = 10
    state = fit(
        model,
        torch.as_tensor(dataset.train),
        config=TrainConfig(**settings),
        evaluate=snapshots,
        progress=False,
    )
    return {"steps": state.step, "train_seconds": state.seconds, "best_step": state.best_step}


def summarise(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


# ---- part 1: the ablation ----------------------------------------------------------------------
BASE = {
    "model": {"blocks": 2, "hidden_features": (256, 256)},
    "train": {"batch_size": 512, "lr": 1e-3, "val_fraction": 0.1},
}
FACTORS: dict[str, list[tuple[str, dict, dict]]] = {
    "batch size": [
        ("256", {}, {"batch_size": 256}),
        ("1024", {}, {"batch_size": 1024}),
        ("2048", {}, {"batch_size": 2048}),
        ("4096", {}, {"batch_size": 4096}),
    ],
    "estimator": [
        ("score m=2", {}, {"estimator": "score", "samples_per_target": 2}),
        ("score m=4", {}, {"estimator": "score", "samples_per_target": 4}),
        ("score m=8", {}, {"estimator": "score", "samples_per_target": 8}),
        ("sliced", {}, {"estimator": "sliced"}),
    ],
    "beta": [("0.5", {}, {"beta": 0.5}), ("1.5", {}, {"beta": 1.5})],
    "noise features": [("D/2", {"noise": 0.5}, {}), ("2D", {"noise": 2.0}, {})],
    "network": [
        ("width 512", {"hidden_features": (512, 512)}, {}),
        ("depth 3", {"hidden_features": (256, 256, 256)}, {}),
        ("depth 3 residual", {"hidden_features": (256, 256, 256), "residual": True}, {}),
    ],
    "learning rate": [("3e-4", {}, {"lr": 3e-4}), ("3e-3", {}, {"lr": 3e-3})],
    "warm-up": [("500 steps", {}, {"warmup_steps": 500})],
    "weight average": [("EMA 0.99", {}, {"ema": 0.99}), ("EMA 0.999", {}, {"ema": 0.999})],
    "K (blocks)": [("K=1", {"blocks": 1}, {}), ("K=4", {"blocks": 4}, {})],
}


def ablation_model(features: int, options: dict) -> GenerativeModel:
    options = {**BASE["model"], **options}
    noise = options.pop("noise", 1.0)
    return SemiAutoregressiveGenerator(
        features, noise_features=max(1, int(noise * features)), **options
    )


# combinations of the factors that helped alone, checked together before one becomes the recipe
COMBINATIONS: list[tuple[str, str, dict, dict]] = [
    (
        "combined",
        "beta 0.5 + noise 2D + lr 3e-3 + K=1",
        {"noise": 2.0, "blocks": 1},
        {"beta": 0.5, "lr": 3e-3},
    ),
    (
        "combined",
        "... + depth 3 residual",
        {"noise": 2.0, "blocks": 1, "hidden_features": (256, 256, 256), "residual": True},
        {"beta": 0.5, "lr": 3e-3},
    ),
    (
        "combined",
        "... + depth 3 residual, width 512",
        {"noise": 2.0, "blocks": 1, "hidden_features": (512, 512, 512), "residual": True},
        {"beta": 0.5, "lr": 3e-3},
    ),
    (
        "combined",
        "... + depth 3 residual, width 512, batch 1024",
        {"noise": 2.0, "blocks": 1, "hidden_features": (512, 512, 512), "residual": True},
        {"beta": 0.5, "lr": 3e-3, "batch_size": 1024},
    ),
]


RECIPE_CELL = "... + depth 3 residual, width 512"  # the recipe's settings for digits


def run_cells(cells: list[tuple[str, str, dict, dict]], budget: float) -> list[dict]:
    dataset = load_dataset("digits", seed=0)
    rows = []
    for factor, level, model_options, config_options in cells:
        per_seed = []
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = ablation_model(dataset.features, model_options)
            config = TrainConfig(**{**BASE["train"], **config_options})
            run = train(model, dataset, config, budget, seed)
            per_seed.append({**run, **score(model, dataset, seed, full=False)})
        row = {"factor": factor, "level": level, "runs": per_seed}
        for key in metrics.JUDGES:
            row[f"{key}_mean"], row[f"{key}_sd"] = summarise([r.get(key) for r in per_seed])
        row["steps_mean"] = float(np.mean([r["steps"] for r in per_seed]))
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
        rows.append(row)
    return rows


def run_ablation(budget: float) -> dict:
    cells = [("base", "-", {}, {})] + [
        (factor, level, model, config)
        for factor, levels in FACTORS.items()
        for level, model, config in levels
    ]
    return {
        "dataset": "digits",
        "budget": budget,
        "seeds": list(SEEDS),
        "rows": run_cells(cells, budget),
    }


def ablation_markdown(machine: dict, result: dict) -> str:
    base = next(r for r in result["rows"] if r["factor"] == "base")
    lines = [
        "# Ablation: what matters for energy training (digits)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}. "
        f"SemiAutoregressiveGenerator, {result['budget']:.0f} s of training per run, "
        f"{len(result['seeds'])} seeds per cell (mean +- sd), one factor changed at a time from "
        "the base recipe (K=2, hidden (256, 256), batch 512, lr 1e-3, energy distance with beta 1, "
        "no EMA, no warm-up; 10% of the rows validate, best weights kept). C2ST: held-out "
        "accuracy of the stronger of a boosted-tree and a 25-NN classifier (0.5 is best); the "
        "effect is the change against the base; trees / k-NN: the two C2STs apart (on digits "
        "the trees' saturates near 1 for every cell, so the k-NN column ranks the cells); "
        "off-support: share of samples farther from the test rows than 99.9% of those are from "
        "each other (the data's: 0.001); P / R: k-NN precision / recall (1 is best).",
        "",
        "| factor | level | C2ST | effect | trees | k-NN | k-NN effect | off-support | P | R "
        "| steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        first = r["factor"] == "base"
        effect = f"{r['c2st_mean'] - base['c2st_mean']:+.3f}"
        knn_effect = f"{r['c2st_knn_mean'] - base['c2st_knn_mean']:+.3f}"
        lines.append(
            f"| {r['factor']} | {r['level']} | {r['c2st_mean']:.3f} +- {r['c2st_sd']:.3f} | "
            f"{'' if first else effect} | {r['c2st_boosted_trees_mean']:.3f} | "
            f"{r['c2st_knn_mean']:.3f} +- {r['c2st_knn_sd']:.3f} | {'' if first else knn_effect} | "
            f"{r['off_support_share_mean']:.4f} | {r['precision_mean']:.3f} | "
            f"{r['recall_mean']:.3f} | {r['steps_mean']:.0f} |"
        )
    lines += ["", "Verdicts (computed from the rows above):", ""]
    for key, name in (("c2st", "C2ST"), ("c2st_knn", "k-NN C2ST"), ("recall", "recall")):
        pick = max if key == "recall" else min
        best = pick(result["rows"], key=lambda r: r[f"{key}_mean"])
        lines.append(
            f"- best by {name}: {best['factor']}, {best['level']} "
            f"({best[f'{key}_mean']:.3f} +- {best[f'{key}_sd']:.3f})"
        )
    recipe = next((r for r in result["rows"] if r["level"] == RECIPE_CELL), None)
    if recipe is not None:
        lines.append(
            f"- the recipe (combined, {RECIPE_CELL}): C2ST {recipe['c2st_mean']:.3f}, k-NN "
            f"{recipe['c2st_knn_mean']:.3f}, recall {recipe['recall_mean']:.3f}"
        )
    return "\n".join(lines) + "\n"


# ---- part 2: the comparison --------------------------------------------------------------------
def comparison_models(
    dataset: Dataset,
) -> list[tuple[str, Callable[[], GenerativeModel], TrainConfig]]:
    from energyflow.training.recipe import recommended_model_options

    features = dataset.features
    energy = TrainConfig()  # unset fields: fit fills in the recipe for the data
    saef = recommended_model_options(features, "saef")
    flow = recommended_model_options(features, "affine")
    hybrid = TrainConfig(objective="hybrid")
    return [
        ("SAEF (energy, recipe)", lambda: SemiAutoregressiveGenerator(features, **saef), energy),
        ("BlockAffineFlow (energy, recipe)", lambda: BlockAffineFlow(features, **flow), energy),
        ("BlockAffineFlow (hybrid)", lambda: BlockAffineFlow(features, **flow), hybrid),
        ("BlockAffineFlow (MLE)", lambda: BlockAffineFlow(features, **flow), MLE),
        ("zuko MAF (MLE)", lambda: zuko_maf(features), MLE),
    ]


METRICS = (
    *metrics.JUDGES,
    "c2st_mlp",
    "energy_distance",
    "mmd",
    "kde_log_likelihood",
    "log_likelihood",
)


def run_comparison(name: str, budget: float, curves: bool) -> dict:
    dataset = load_dataset(name, n_train=20000, n_test=2000, seed=0)
    rows, shown, curve_rows = [], {}, []
    for label, build, config in comparison_models(dataset):
        per_seed = []
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = build()
            snapshots = Snapshots() if curves and "hybrid" not in label else None
            run = train(model, dataset, config, budget, seed, snapshots)
            per_seed.append({**run, **score(model, dataset, seed)})
            if seed == SEEDS[0]:
                shown[label] = model.sample((2000,)).numpy()
            if snapshots is not None:
                curve_rows += quality_over_time(label, model, snapshots, dataset, seed)
        row = {"model": label, "objective": config.objective, "parameters": parameter_count(model)}
        for key in (*METRICS, "steps", "sample_10k_seconds"):
            row[key] = summarise([r.get(key) for r in per_seed])
        row["runs"] = per_seed
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
        rows.append(row)
    payload = {"budget": budget, "rows": rows, "figure": save_grid(dataset, shown)}
    if curve_rows:
        payload["time_to_quality"] = curve_rows
    return payload


def quality_over_time(
    label: str, model: GenerativeModel, snapshots: Snapshots, dataset: Dataset, seed: int
) -> list[dict]:
    points = []
    final = copy.deepcopy(model.state_dict())
    for seconds, state in snapshots.taken:
        model.load_state_dict(state)
        points.append(
            {
                "model": label,
                "seed": seed,
                "seconds": seconds,
                **score(model, dataset, seed, full=False),
            }
        )
    model.load_state_dict(final)
    return points


def save_time_to_quality(points: list[dict], budget: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(p["model"] for p in points):
        mine = [p for p in points if p["model"] == label]
        marks = sorted({round(p["seconds"] / SNAPSHOT_SECONDS) for p in mine})
        x, mean, sd = [], [], []
        for mark in marks:
            values = [p["c2st"] for p in mine if round(p["seconds"] / SNAPSHOT_SECONDS) == mark]
            x.append(mark * SNAPSHOT_SECONDS)
            mean.append(np.mean(values))
            sd.append(np.std(values))
        ax.errorbar(x, mean, yerr=sd, label=label, marker="o", ms=3, capsize=2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("test C2ST accuracy (0.5 is best)")
    ax.set_title(f"digits: quality per second ({budget:.0f} s runs, mean +- sd of 3 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "study_time_to_quality.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def save_grid(dataset: Dataset, samples: dict[str, np.ndarray]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    rows = [("data (test)", dataset.test)] + [(n, samples[n]) for n in names]
    if dataset.image_shape is not None:
        fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.1 * len(rows)))
        for r, (label, values) in enumerate(rows):
            for c in range(10):
                axes[r, c].imshow(
                    np.moveaxis(np.clip(values[c], 0, 1).reshape(dataset.image_shape), 0, -1),
                    cmap="gray_r",
                    vmin=0,
                    vmax=1,
                )
                axes[r, c].axis("off")
            axes[r, 0].set_title(label, fontsize=7, loc="left")
    else:  # the first two features
        fig, axes = plt.subplots(
            1, len(rows), figsize=(2.4 * len(rows), 2.6), sharex=True, sharey=True
        )
        for ax, (label, values) in zip(axes, rows):
            ax.scatter(values[:2000, 0], values[:2000, 1], s=1, alpha=0.4)
            ax.set_title(label, fontsize=7)
            ax.set_aspect("equal")
    fig.tight_layout()
    path = RESULTS / f"study_{dataset.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _cell(summary, digits: int = 3) -> str:
    mean, sd = summary
    return "-" if not math.isfinite(mean) else f"{mean:.{digits}f} +- {sd:.{digits}f}"


def comparison_markdown(machine: dict, saved: dict) -> str:
    results = saved["results"]
    lines = [
        "# Sample quality: energy training against maximum likelihood",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}. Every "
        "model trains for the same wall-clock budget (per dataset below; the cosine schedule "
        "ends at the budget), 3 seeds, mean +- sd. 10% of the training rows validate each "
        "model by its own objective and the best weights are kept. Energy models use "
        "energyflow's recommended recipe (`energyflow.training.recipe`; the ablation behind it: "
        "[study_ablation.md](study_ablation.md)). zuko's MAF: 4 transforms, hidden (128, 128), "
        "batch 256, lr 1e-3. Judged on held-out rows by `energyflow.metrics.judge`: C2ST = "
        "cross-validated accuracy of the stronger of a boosted-tree (trees) and a 25-NN (k-NN) "
        "classifier (0.5 is best; the primary metric), MLP = the sbibm MLP C2ST (a weaker judge, "
        "for comparison), P / R = k-NN precision / recall, off = off-support share (samples "
        "farther from the test rows than 99.9% of those are from each other; the data's own: "
        "0.001), ED = test energy distance (what energy training optimises), LL = exact mean "
        "test log-likelihood (flows).",
        "",
    ]
    for name, payload in results.items():
        lines += [
            f"## {name} ({payload['budget']:.0f} s per model)",
            "",
            f"![samples]({payload['figure']})",
            "",
            "| model | params | steps | C2ST | trees | k-NN | MLP | P | R | off | ED | LL "
            "| sample 10k s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in payload["rows"]:
            lines.append(
                f"| {r['model']} | {r['parameters']} | {r['steps'][0]:.0f} | {_cell(r['c2st'])} | "
                f"{r['c2st_boosted_trees'][0]:.3f} | {r['c2st_knn'][0]:.3f} | "
                f"{r['c2st_mlp'][0]:.3f} | {r['precision'][0]:.3f} | {r['recall'][0]:.3f} | "
                f"{r['off_support_share'][0]:.4f} | {_cell(r['energy_distance'], 4)} | "
                f"{_cell(r['log_likelihood'], 2)} | {r['sample_10k_seconds'][0]:.3f} |"
            )
        if "time_to_quality_figure" in payload:
            lines += ["", f"![time to quality]({payload['time_to_quality_figure']})"]
        lines.append("")
    if saved.get("cli_defaults"):
        lines += cli_markdown(saved["cli_defaults"])
    lines += ["## Verdicts (computed from the rows above)", ""]
    for name, payload in results.items():
        energy = min(
            (r for r in payload["rows"] if r["objective"] == "energy"), key=lambda r: r["c2st"][0]
        )
        maf = next(r for r in payload["rows"] if r["model"].startswith("zuko"))
        gap = energy["c2st"][0] - maf["c2st"][0]
        lines.append(
            f"- {name}: best energy-trained model {energy['model']} C2ST "
            f"{_cell(energy['c2st'])} vs zuko MAF {_cell(maf['c2st'])}: {gap:+.3f}."
        )
    return "\n".join(lines) + "\n"


# ---- part 3: what a user gets from the command line's defaults --------------------------------
def run_cli_defaults(steps: int) -> list[dict]:
    """``energyflow train --data FILE.npy --out DIR --steps N`` (plus --seed) on digits and on
    moons (noise 0.07) saved as .npy, against zuko's MAF trained for the same wall-clock."""
    import tempfile
    from pathlib import Path

    from sklearn.datasets import make_moons

    from energyflow.cli import main as cli_main
    from energyflow.training.data import digits

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        np.save(root / "digits.npy", digits(np.random.default_rng(0)))
        np.save(
            root / "moons.npy", make_moons(20000, noise=0.07, random_state=0)[0].astype(np.float32)
        )
        for name in ("digits", "moons"):
            per_seed = []
            for seed in SEEDS:
                out = root / f"{name}-{seed}"
                args = ["train", "--data", str(root / f"{name}.npy"), "--out", str(out)]
                args += ["--steps", str(steps), "--seed", str(seed)]
                started = time.perf_counter()
                cli_main(args)
                seconds = time.perf_counter() - started
                result = json.loads((out / "metrics.json").read_text())
                dataset = load_dataset(str(root / f"{name}.npy"), seed=seed)
                maf = zuko_maf(dataset.features)
                train(maf, dataset, MLE, result["seconds"], seed)
                per_seed.append(
                    {
                        "cli_seconds_total": seconds,
                        "cli_train_seconds": result["seconds"],
                        "cli_c2st": score_cli(out, dataset, seed),
                        "maf_c2st": score(maf, dataset, seed, full=False)["c2st"],
                    }
                )
            row = {"data": name, "steps": steps, "judge": "strong", "runs": per_seed}
            for key in ("cli_c2st", "maf_c2st", "cli_train_seconds"):
                row[key] = summarise([r[key] for r in per_seed])
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
            rows.append(row)
    return rows


def score_cli(out, dataset: Dataset, seed: int) -> float:
    """The C2ST of a CLI run's saved model, measured as for every other model here."""
    from energyflow.models import load_model

    return score(load_model(out / "model.pt"), dataset, seed, full=False)["c2st"]


def cli_markdown(rows: list[dict]) -> list[str]:
    lines = [
        "## Command-line defaults on a user's .npy",
        "",
        "`energyflow train --data FILE.npy --out DIR --steps "
        f"{rows[0]['steps']}` (and `--seed`), nothing else; zuko's MAF (as above) trained for "
        "the same seconds. 3 seeds; C2ST on the held-out 20% as everywhere here."
        + (
            ""
            if rows[0].get("judge") == "strong"
            else " These rows were judged by the MLP C2ST, before the strong judges: "
            "[study_fidelity.md](study_fidelity.md) has the command line's defaults judged by them."
        ),
        "",
        "| data | CLI train s | CLI C2ST | MAF C2ST (same seconds) | gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        gap = r["cli_c2st"][0] - r["maf_c2st"][0]
        lines.append(
            f"| {r['data']} | {r['cli_train_seconds'][0]:.0f} | {_cell(r['cli_c2st'])} | "
            f"{_cell(r['maf_c2st'])} | {gap:+.3f} |"
        )
    return lines + [""]


# ---- part 4: sample fidelity with the command line's defaults -----------------------------------
FIDELITY_DATASETS = ("8gaussians", "moons", "checkerboard", "digits")
FIDELITY_DEFAULTS = "energyflow train (CLI defaults)"
FIDELITY_BASELINES = ("zuko MAF (defaults, MLE)", "zuko NSF (defaults, MLE)")
CENTRE_DRAWS = 50000  # 8 Gaussians: draws for the centre off-support share, a 0.001-level share


def fidelity_variants(features: int) -> dict[str, list[str]]:
    """The CLI runs of a dataset: its defaults, the mixture latent flipped (the recipe's 16
    components for D <= 8, none above), where the recipe draws uniform noise (D <= 8) normal
    noise instead, and where the recipe standardises by quantiles (D > 8) the moments
    standardisation instead."""
    from energyflow.training.recipe import recommended_model_options, recommended_settings

    recipe = recommended_model_options(features)
    flipped = 0 if recipe["mixture_components"] else 16
    variants = {FIDELITY_DEFAULTS: [], f"CLI, --mixture-components {flipped}": [
        "--mixture-components", str(flipped)
    ]}  # fmt: skip
    if recipe["noise_distribution"] == "uniform":
        variants["CLI, --noise-distribution normal"] = ["--noise-distribution", "normal"]
    if recommended_settings(1000, features)["standardisation"] == "quantile":
        variants["CLI, --standardisation moments"] = ["--standardisation", "moments"]
    return variants


def centre_off_support(samples: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """8 Gaussians: the shares of samples and of test rows farther from the nearest mode centre
    than the test rows' 99.9th percentile of that distance."""
    angles = np.arange(8) * 2 * math.pi / 8
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)

    def distance(rows: np.ndarray) -> np.ndarray:
        return np.linalg.norm(rows[:, None] - centres[None], axis=-1).min(1)

    threshold = np.quantile(distance(test), 0.999)
    return float((distance(samples) > threshold).mean()), float((distance(test) > threshold).mean())


def judged(samples: np.ndarray, dataset: Dataset, seed: int) -> dict:
    test = dataset.test
    judged_rows = samples[: max(len(test), 5000)]
    row = metrics.judge(judged_rows, test, seed=seed)
    row["c2st_mlp"] = metrics.c2st_mlp(judged_rows, test, seed=seed)
    if dataset.name == "8gaussians":
        row["centre_off_support"], row["data_centre_off_support"] = centre_off_support(
            samples, test
        )
    return row


def run_fidelity(datasets: list[str], budget: float) -> list[dict]:
    """Each dataset: ``energyflow train --data NAME --time-budget B`` (nothing else but the
    seed; also without the mixture latent), and zuko's MAF and NSF at their documented defaults
    trained by maximum likelihood for the same seconds; 3 seeds; 5000 samples judged against
    the held-out rows."""
    import tempfile
    from pathlib import Path

    from energyflow.cli import main as cli_main
    from energyflow.models import load_model

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in datasets:
            variants = fidelity_variants(load_dataset(name).features)
            for label in [*variants, *FIDELITY_BASELINES]:
                per_seed = []
                for seed in SEEDS:
                    dataset = load_dataset(name, seed=seed)
                    if label in variants:
                        out = Path(scratch) / f"{name}-{len(rows)}-{seed}"
                        args = ["train", "--data", name, "--out", str(out), "--seed", str(seed)]
                        args += ["--time-budget", str(budget)]
                        cli_main(args + variants[label])
                        model = load_model(out / "model.pt")
                        steps = json.loads((out / "metrics.json").read_text())["steps"]
                    else:
                        torch.manual_seed(seed)
                        model = ZukoFlow(label.split()[1], dataset.features)
                        steps = train(model, dataset, MLE, budget, seed)["steps"]
                    torch.manual_seed(1000 + seed)
                    draws = CENTRE_DRAWS if name == "8gaussians" else 5000
                    with torch.no_grad():
                        samples = model.sample((draws,)).numpy()
                    per_seed.append({"steps": steps, **judged(samples, dataset, seed)})
                    if seed == SEEDS[0] and dataset.features == 2:  # for the plot
                        per_seed[-1]["shown"] = np.round(samples[:2000], 4).tolist()
                row = {"data": name, "model": label, "budget": budget, "runs": per_seed,
                       "measured": time.strftime("%Y-%m-%d")}  # fmt: skip
                for key in per_seed[0]:
                    if key != "shown":
                        row[key] = summarise([r[key] for r in per_seed])
                print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
                rows.append(row)
    return rows


def _measured_days(rows: list[dict]) -> dict[str, list[str]]:
    """Day -> the datasets whose rows were measured that day (rows kept from a run before the
    rows were dated: "in an earlier run", on another machine)."""
    days: dict[str, list[str]] = {}
    for row in rows:
        names = days.setdefault(row.get("measured", "in an earlier run on an AMD EPYC"), [])
        if row["data"] not in names:
            names.append(row["data"])
    return days


def fidelity_markdown(machine: dict, rows: list[dict]) -> str:
    lines = [
        "# Sample fidelity with the command line's defaults",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}. "
        f"`energyflow train --data NAME --time-budget {rows[0]['budget']:.0f}` and nothing else "
        "but `--seed` (and, as ablations, the mixture latent flipped: `--mixture-components 0` "
        "where the recipe uses 16, 16 where it uses none; `--noise-distribution normal` where "
        "the recipe draws uniform noise; and `--standardisation moments` where the recipe maps "
        "the features through their quantiles), against zuko's MAF and NSF "
        "at their documented defaults (3 transforms, hidden (64, 64); NSF 8 bins) trained by "
        "maximum likelihood for the same seconds (batch 256, lr 1e-3, 10% validation, best "
        "weights). 3 seeds, mean +- sd; 5000 samples judged against the held-out rows by "
        "`energyflow.metrics.judge`: C2ST = the stronger of boosted trees and 25-NN (0.5 is "
        "best), MLP = the sbibm MLP C2ST (weaker, for comparison), P / R = k-NN precision / "
        "recall, off = off-support share (the data's own: 0.001); for 8 Gaussians also the "
        f"share of {CENTRE_DRAWS} samples farther from every mode centre than 99.9% of the "
        "test rows are (centre off; the test rows': 0.001). Measured: "
        + "; ".join(f"{', '.join(names)} {day}" for day, names in _measured_days(rows).items())
        + ".",
        "",
        "| data | model | steps | C2ST | trees | k-NN | MLP | P | R | off | centre off |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        centre = _cell(r["centre_off_support"], 4) if "centre_off_support" in r else "-"
        lines.append(
            f"| {r['data']} | {r['model']} | {r['steps'][0]:.0f} | {_cell(r['c2st'])} | "
            f"{r['c2st_boosted_trees'][0]:.3f} | {r['c2st_knn'][0]:.3f} | "
            f"{r['c2st_mlp'][0]:.3f} | {r['precision'][0]:.3f} | {r['recall'][0]:.3f} | "
            f"{_cell(r['off_support_share'], 4)} | {centre} |"
        )
    lines += ["", "## Verdicts (computed from the rows above)", ""]
    for name in dict.fromkeys(r["data"] for r in rows):
        here = [r for r in rows if r["data"] == name]
        ours = next(r for r in here if r["model"] == FIDELITY_DEFAULTS)
        baseline = min(
            (r for r in here if r["model"].startswith("zuko")), key=lambda r: r["c2st"][0]
        )
        gap = ours["c2st"][0] - baseline["c2st"][0]
        lines.append(
            f"- {name}: CLI defaults C2ST {_cell(ours['c2st'])} vs the better zuko flow "
            f"({baseline['model']}) {_cell(baseline['c2st'])}: {gap:+.3f} "
            f"({'met' if gap <= 0.02 else 'not met'}: target at most +0.02)."
        )
        if "centre_off_support" in ours:
            share, data_share = ours["centre_off_support"][0], ours["data_centre_off_support"][0]
            lines.append(
                f"- {name}: CLI defaults centre off-support {_cell(ours['centre_off_support'], 4)}"
                f" vs the test rows' {data_share:.4f}: {share / data_share:.1f}x "
                f"({'met' if share <= 2 * data_share else 'not met'}: target at most 2x)."
            )
    return "\n".join(lines) + "\n"


def save_fidelity_grid(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toys = [r for r in rows if r["data"] != "digits"]
    names = list(dict.fromkeys(r["data"] for r in toys))
    models = list(dict.fromkeys(r["model"] for r in toys))
    fig, axes = plt.subplots(
        len(names), len(models), figsize=(2.6 * len(models), 2.6 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j, model in enumerate(models):
            ax = axes[i, j]
            row = next(r for r in toys if (r["data"], r["model"]) == (name, model))
            shown = np.asarray(row["runs"][0]["shown"])
            ax.scatter(shown[:, 0], shown[:, 1], s=0.5, alpha=0.4)
            ax.set_title(f"{name}: {model}\nC2ST {row['c2st'][0]:.3f}", fontsize=6)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path = RESULTS / "study_fidelity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=("ablation", "combine", "compare", "cli", "fidelity"), required=True
    )
    parser.add_argument("--cli-steps", type=int, default=3000, help="--steps of part cli")
    parser.add_argument(
        "--datasets", nargs="+", default=["8gaussians", "checkerboard", "digits", "breast_cancer"]
    )
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per run (digits)")
    parser.add_argument("--toy-budget", type=float, default=15.0, help="seconds per run (others)")
    args = parser.parse_args()
    machine = machine_description("cpu")
    if args.part == "combine":  # appended to the ablation's results
        result = json.loads((RESULTS / "study_ablation.json").read_text())
        result["rows"] = [r for r in result["rows"] if r["factor"] != "combined"]
        result["rows"] += run_cells(COMBINATIONS, result["budget"])
        (RESULTS / "study_ablation.json").write_text(json.dumps(result, indent=1))
        (RESULTS / "study_ablation.md").write_text(ablation_markdown(result["machine"], result))
        print((RESULTS / "study_ablation.md").read_text())
        return
    if args.part == "ablation":
        result = run_ablation(args.budget)
        (RESULTS / "study_ablation.json").write_text(
            json.dumps({"machine": machine, **result}, indent=1)
        )
        (RESULTS / "study_ablation.md").write_text(ablation_markdown(machine, result))
        print((RESULTS / "study_ablation.md").read_text())
        return
    if args.part == "fidelity":
        names = [n for n in args.datasets if n in FIDELITY_DATASETS] or list(FIDELITY_DATASETS)
        stored = RESULTS / "study_fidelity.json"
        rows = json.loads(stored.read_text())["rows"] if stored.exists() else []
        fresh = run_fidelity(names, args.budget)
        rows = [r for r in rows if r["data"] not in names] + fresh
        rows.sort(key=lambda r: FIDELITY_DATASETS.index(r["data"]))
        stored.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        save_fidelity_grid(rows)
        (RESULTS / "study_fidelity.md").write_text(
            fidelity_markdown(machine, rows) + "\n![samples](study_fidelity.png)\n"
        )
        print((RESULTS / "study_fidelity.md").read_text())
        return
    if args.part == "cli":  # appended to study.json / study.md
        saved = json.loads((RESULTS / "study.json").read_text())
        saved["cli_defaults"] = run_cli_defaults(args.cli_steps)
        (RESULTS / "study.json").write_text(json.dumps(saved, indent=1))
        (RESULTS / "study.md").write_text(comparison_markdown(saved["machine"], saved))
        print((RESULTS / "study.md").read_text())
        return
    stored = RESULTS / "study.json"
    saved = json.loads(stored.read_text()) if stored.exists() else {}
    results = saved.get("results", {})  # datasets not named this time keep their earlier rows
    for name in args.datasets:
        budget = args.budget if name == "digits" else args.toy_budget
        results[name] = run_comparison(name, budget, curves=name == "digits")
        if "time_to_quality" in results[name]:
            results[name]["time_to_quality_figure"] = save_time_to_quality(
                results[name]["time_to_quality"], budget
            )
        saved.update(machine=machine, results=results)  # kept if a later dataset fails
        (RESULTS / "study.json").write_text(json.dumps(saved, indent=1))
    (RESULTS / "study.md").write_text(comparison_markdown(machine, saved))
    print((RESULTS / "study.md").read_text())


if __name__ == "__main__":
    main()
