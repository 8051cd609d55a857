"""Posterior-inference study: energy-trained conditional models against neural posterior
estimation (NPE) with zuko's flows, on tasks with reference posteriors.

Part ``compare``: for each task and simulation count, every model trains for the same wall-clock
budget through ``energyflow.inference.fit_posterior`` (same prior transform, 10% validation,
best weights), 3 seeds:
  - SemiAutoregressiveGenerator K=1 and K=2, energy score (``fit_posterior``'s defaults:
    ``training.recipe.recommended_posterior_options`` and ``POSTERIOR_RECIPE``), and K=1 with
    the mixed discrete-continuous latent (16 components);
  - BlockAffineFlow, energy score, and by maximum likelihood;
  - zuko NSF and MAF by maximum likelihood (NPE; zuko's documented defaults), and the NSF by
    the hybrid objective (energy score + NLL per feature: does the energy term help a strong
    flow?).
The SBI C2ST of each observation's draws against its reference posterior (``--observations``
of the task's ten, ``--c2st-draws`` each) and the seconds to draw 10^4 samples for each of 10
observations. ``--models`` keeps the models whose names contain one of the given words; rows of
other (task, sims, model) cells already in study_posterior.json are kept.

Part ``ablation`` (10^4 simulations): one factor at a time from the posterior recipe: samples per
target m, batch size, beta, noise features, width, context standardisation off; then, from the
recipe as it now is (D noise features), weight averaging, learning rate, activation, depth,
the last weights instead of the best-validation ones, and a Gaussian kernel score or a variogram
score added to the energy score (``kernel_weight``, ``variogram_weight``). ``--variants``
keeps the variants whose names contain one of the given words; rows of other variants are kept.

Writes study_posterior.{json,md} (after every row).

    python benchmarks/study_posterior.py --part compare --budget 20 --observations 3
    python benchmarks/study_posterior.py --part compare --sims 1000 100000 --models K=1 NSF
    python benchmarks/study_posterior.py --part ablation --tasks two_moons --budget 15
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _zuko import ZukoFlow

from _common import RESULTS, machine_description
from energyflow import metrics
from energyflow.inference import fit_posterior, get_task
from energyflow.inference.posterior import Posterior
from energyflow.models import BlockAffineFlow, GenerativeModel, SemiAutoregressiveGenerator
from energyflow.training.recipe import recommended_posterior_options

SEEDS = (0, 1, 2)
ENERGY: dict = {}  # fit_posterior's defaults (POSTERIOR_RECIPE)
NPE = {"objective": "mle"}  # batch 256, lr 1e-3, 10% validation
HYBRID = {"objective": "hybrid"}  # energy score (m 4) + NLL per feature, NPE's other settings


def models(features: int, context: int) -> dict:
    """name -> (build(), training settings)."""
    saef = recommended_posterior_options(features, "saef")
    hidden = (256, 256)
    return {
        "SAEF K=1 (energy)": (
            lambda: SemiAutoregressiveGenerator(features, context_features=context, **saef),
            ENERGY,
        ),
        "SAEF K=2 (energy)": (
            lambda: SemiAutoregressiveGenerator(
                features, context_features=context, **{**saef, "blocks": min(2, features)}
            ),
            ENERGY,
        ),
        "SAEF K=1 (energy, mixture 16)": (
            lambda: SemiAutoregressiveGenerator(
                features, context_features=context, mixture_components=16, **saef
            ),
            ENERGY,
        ),
        "BlockAffineFlow (energy)": (
            lambda: BlockAffineFlow(
                features, features, context_features=context, hidden_features=hidden
            ),
            ENERGY,
        ),
        "BlockAffineFlow (MLE)": (
            lambda: BlockAffineFlow(
                features, features, context_features=context, hidden_features=hidden
            ),
            NPE,
        ),
        "zuko NSF (NPE)": (lambda: ZukoFlow("NSF", features, context), NPE),
        "zuko NSF (hybrid)": (lambda: ZukoFlow("NSF", features, context), HYBRID),
        "zuko MAF (NPE)": (lambda: ZukoFlow("MAF", features, context), NPE),
    }


def sampling_seconds(posterior: Posterior, observations: torch.Tensor, repeats: int = 1) -> float:
    """Fastest of ``repeats`` timed calls drawing 10^4 samples for each observation."""
    posterior.sample(10, observations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        posterior.sample(10000, observations)
        times.append(time.perf_counter() - start)
    return min(times)


def run_sampling(args, payload: dict, save) -> list[dict]:
    """Sampling cost alone (it does not depend on the weights): each model as built for the
    compare part, standardised on 1000 simulations, fastest of 5 calls."""
    rows = []
    for name in args.tasks:
        task = get_task(name)
        theta, x = task.simulations(1000)
        for label, (build, _) in models(task.prior.dim, task.observations.shape[1]).items():
            torch.manual_seed(0)
            model = build()
            model.fit_standardisation(task.prior.unconstrain(theta), x)
            seconds = sampling_seconds(Posterior(model, task.prior), task.observations, 5)
            rows.append({"task": name, "model": label, "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def evaluate(posterior: Posterior, task, observations: int, draws: int, seed: int) -> dict:
    """Judges against the reference posterior, averaged over ``observations``: the strong C2ST
    (``energyflow.metrics.judge``, primary), its parts, precision/recall, the off-support share,
    and the sbibm MLP C2ST (the SBI literature's judge, for comparison)."""
    per_observation = []
    for index in range(observations):
        torch.manual_seed(seed)
        samples = posterior.sample(draws, task.observations[index])
        reference = task.reference_posterior(index, draws, seed=seed)
        judged = metrics.judge(samples, reference, seed=seed)
        judged["c2st_mlp"] = metrics.c2st_mlp(samples, reference, seed=seed)
        per_observation.append(judged)
    row = {key: float(np.mean([p[key] for p in per_observation])) for key in per_observation[0]}
    return {**row, "c2st_per_observation": [p["c2st"] for p in per_observation]}


def run_one(
    task, model: GenerativeModel, settings: dict, sims: int, budget: float, seed: int, args
) -> dict:
    theta, x = task.simulations(sims, seed=seed)
    torch.manual_seed(seed)
    posterior = fit_posterior(
        theta,
        x,
        model=model,
        prior=task.prior,
        steps=10**9,
        time_budget=budget,
        seed=seed,
        **settings,
    )
    row = {"steps": posterior.state.step, "best_step": posterior.state.best_step}
    row.update(evaluate(posterior, task, args.observations, args.c2st_draws, seed))
    row["sample_10k_x10_seconds"] = sampling_seconds(posterior, task.observations)
    return row


def summary(values: list[float]) -> list[float]:
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def run_compare(args, payload: dict, save) -> list[dict]:
    rows = payload.get("compare", [])
    for name in args.tasks:
        task = get_task(name)
        for sims in args.sims:
            for label, (build, settings) in models(
                task.prior.dim, task.observations.shape[1]
            ).items():
                if args.models and not any(word in label for word in args.models):
                    continue
                runs = []
                for seed in SEEDS:
                    torch.manual_seed(seed)
                    runs.append(run_one(task, build(), settings, sims, args.budget, seed, args))
                row = {
                    "task": name,
                    "sims": sims,
                    "model": label,
                    "budget": args.budget,
                    **{
                        key: summary([r[key] for r in runs])
                        for key in ("c2st", "c2st_mlp", "off_support_share", "precision")
                    },
                    "steps": summary([r["steps"] for r in runs]),
                    "sample_seconds": summary([r["sample_10k_x10_seconds"] for r in runs]),
                    "runs": runs,
                }
                print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
                cell = (name, sims, label, args.budget)
                rows = [r for r in rows if (r["task"], r["sims"], r["model"], r["budget"]) != cell]
                rows.append(row)
                save(rows)
    return rows


ABLATION = [
    ("base (m=4, batch 256, beta 0.5, noise 2D, width 128: the recipe before this)", {}, {}),
    ("m=2", {"samples_per_target": 2}, {}),
    ("m=8", {"samples_per_target": 8}, {}),
    ("batch 1024", {"batch_size": 1024}, {}),
    ("beta 1", {"beta": 1.0}, {}),
    ("beta 0.25", {"beta": 0.25}, {}),
    ("noise D (adopted: the recipe now)", {}, {"noise": 1}),
    ("width 256", {}, {"hidden_features": (256, 256)}),
    ("context not standardised", {}, {"raw_context": True}),
    # from the recipe as it is now (noise D)
    ("recipe (noise D)", {}, {"noise": 1}),
    ("recipe + EMA 0.999", {"ema": 0.999}, {"noise": 1}),
    ("recipe + lr 3e-3", {"lr": 3e-3}, {"noise": 1}),
    ("recipe + silu", {}, {"noise": 1, "activation": "silu"}),
    (
        "recipe + 3 residual layers",
        {},
        {"noise": 1, "hidden_features": (128,) * 3, "residual": True},
    ),
    ("recipe + last weights (no validation)", {"val_fraction": 0.0}, {"noise": 1}),
    # proper scores added to the energy score (docs/math.md, 2.1): the remedies for too-wide
    # posteriors and weak dependence
    (
        "recipe + kernel score (h 0.1)",
        {"kernel_weight": 1.0, "kernel_bandwidth": 0.1},
        {"noise": 1},
    ),
    (
        "recipe + kernel score (h 0.5)",
        {"kernel_weight": 1.0, "kernel_bandwidth": 0.5},
        {"noise": 1},
    ),
    ("recipe + variogram score (p 0.5)", {"variogram_weight": 1.0}, {"noise": 1}),
    # SLCP's posteriors have four sign-symmetric modes: more samples per target see them better?
    ("recipe + m=8", {"samples_per_target": 8}, {"noise": 1}),
    ("recipe + m=16", {"samples_per_target": 16}, {"noise": 1}),
    # a bounded latent (SemiAutoregressiveGenerator's noise_distribution): no stretched tails
    ("recipe + uniform noise", {}, {"noise": 1, "noise_distribution": "uniform"}),
]


def run_ablation(args, payload: dict, save) -> list[dict]:
    rows = payload.get("ablation", [])
    for task_name in args.tasks:
        task = get_task(task_name)
        features, context = task.prior.dim, task.observations.shape[1]
        for label, settings, options in ABLATION:
            if args.variants and not any(word in label for word in args.variants):
                continue
            runs = []
            for seed in SEEDS:
                torch.manual_seed(seed)
                recipe = recommended_posterior_options(features, "saef")
                model = SemiAutoregressiveGenerator(
                    features,
                    1,
                    context_features=context,
                    hidden_features=options.get("hidden_features", recipe["hidden_features"]),
                    noise_features=options.get("noise", 2) * features,
                    residual=options.get("residual", False),
                    activation=options.get("activation", "relu"),
                    noise_distribution=options.get("noise_distribution", "normal"),
                )
                if options.get("raw_context"):
                    model.fit_standardisation = _data_only(model)
                runs.append(
                    run_one(task, model, {**ENERGY, **settings}, 10000, args.budget, seed, args)
                )
            row = {
                "task": task_name,
                "variant": label,
                "budget": args.budget,
                "c2st": summary([r["c2st"] for r in runs]),
                "c2st_mlp": summary([r["c2st_mlp"] for r in runs]),
                "runs": runs,
            }
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
            rows = [r for r in rows if (r["task"], r["variant"]) != (task_name, label)]
            rows.append(row)
            save(rows)
    return rows


def _data_only(model: GenerativeModel):
    """fit_standardisation that leaves the context in its raw units (the ablation's variant)."""
    original = model.fit_standardisation

    def fit_standardisation(data, context=None):
        original(data, None)

    return fit_standardisation


def markdown(machine: dict, payload: dict) -> str:
    lines = [
        "# Posterior inference: energy-trained conditional models against NPE",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        "(the latest run's; rows kept from earlier runs were measured on an AMD EPYC, 2 "
        "cores). Every "
        "model of a row trains the same seconds (wall clock, the `s` column; the schedule ends "
        "there) through "
        "`fit_posterior` (box priors: logit transform; 10% validation, best weights), 3 seeds, "
        f"mean +- sd, averaged over the first {payload['observations']} of each task's ten "
        f"observations, {payload['c2st_draws']} draws against as many reference draws. C2ST: "
        "the stronger of a boosted-tree and a 25-NN classifier's cross-validated accuracy "
        "(`energyflow.metrics.c2st`; 0.5 is perfect); MLP: the sbibm MLP C2ST (the SBI "
        "literature's judge, weaker); off: share of draws off the reference's support (the "
        "reference's own: 0.001). Rows measured before the strong judges existed have only the "
        "MLP C2ST (in the C2ST column, marked *). Sampling: seconds for 10^4 draws for each "
        "of 10 observations.",
        "",
    ]
    if payload.get("compare"):
        lines += [
            "| task | sims | model | s | steps | C2ST | MLP | off | sampling s |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in payload["compare"]:
            strong = "c2st_mlp" in r
            judged = (
                f"{r['c2st'][0]:.3f} +- {r['c2st'][1]:.3f} | {r['c2st_mlp'][0]:.3f} | "
                f"{r['off_support_share'][0]:.4f}"
                if strong
                else f"{r['c2st'][0]:.3f}* | - | -"
            )
            lines.append(
                f"| {r['task']} | {r['sims']} | {r['model']} | {r['budget']:.0f} | "
                f"{r['steps'][0]:.0f} | {judged} | {r['sample_seconds'][0]:.3f} |"
            )
        lines += ["", "## Verdicts (computed from the rows above)", ""]
        for task, sims, budget in dict.fromkeys(
            (r["task"], r["sims"], r["budget"]) for r in payload["compare"]
        ):
            here = [
                r
                for r in payload["compare"]
                if (r["task"], r["sims"], r["budget"]) == (task, sims, budget)
            ]
            energies = [r for r in here if "energy" in r["model"]]
            nsf = next((r for r in here if "NSF" in r["model"]), None)
            if not energies or nsf is None:
                continue
            energy = min(energies, key=lambda r: r["c2st"][0])
            speed = nsf["sample_seconds"][0] / energy["sample_seconds"][0]
            lines.append(
                f"- {task}, {sims} simulations, {budget:.0f} s: best energy-trained "
                f"{energy['model']} C2ST {energy['c2st'][0]:.3f} vs zuko NSF "
                f"{nsf['c2st'][0]:.3f} "
                f"({'met' if energy['c2st'][0] <= nsf['c2st'][0] else 'not met'}); sampling "
                f"{speed:.1f}x faster than the NSF."
            )
        lines += [
            "",
            "What model draws against reference draws show on two moons: a K=1 generator (a "
            "continuous map of connected noise) joins the two crescents by a thin bridge of "
            "samples, and its crescents come out wider than the reference and sharpen slowly "
            "with training; K=2 (one parameter given the other) reduces both. The remedies the "
            "literature suggests for the energy score's weak sensitivity to spread and "
            "dependence, library options now (`kernel_weight`, `variogram_weight`; docs/math.md, "
            "2.1), at 20 s from the recipe on both tasks (the ablation table's last rows): a "
            "Gaussian kernel score term with bandwidth 0.1 or 0.5 standardised units changed "
            "nothing beyond a seed's spread (0.5 was worse on two moons), and a variogram score "
            "term of order 0.5 made both tasks worse; nor did more samples per target on "
            "SLCP's four-mode posteriors (m = 8, 16: fewer steps in the budget, no gain per "
            "step). An earlier 15 s try of the energy score "
            "averaged over betas 0.25-1.5 did not help either (not in the library). Nor, at "
            "20 s from the recipe with D noise features (the ablation table's second block), a "
            "weight average (EMA 0.999: worse), lr 3e-3, SiLU (worse: smooth maps bridge more), "
            "3 residual layers, or the last weights instead of the best-validation ones. Three "
            "times the budget (the 60 s rows) narrows two moons a little for both the generator "
            "and the NSF and leaves the generator's SLCP where it was while the NSF improves: "
            "the gap is not a matter of training time. Nor does the mixed discrete-continuous "
            "latent that removed the 8 Gaussians' bridges (16 components, conditioned like the "
            "context; the 'mixture 16' rows): with the strong judges two moons 0.741 and SLCP "
            "0.945 against 0.723 and 0.937 without it. The hybrid NSF rows ask the converse, "
            "whether the energy score adds to a flow trained by likelihood: not at equal wall "
            "clock, where drawing the score's samples through the spline inverse makes a step "
            "several times dearer than a likelihood step (compare the steps columns).",
        ]
    if payload.get("sampling"):
        lines += [
            "",
            "## Sampling alone (fastest of 5 calls; 10^4 draws for each of 10 observations)",
            "",
            "The `sampling s` column above is one call after each training run, on a shared "
            "machine; this table times the same models untrained (the cost does not depend on "
            "the weights).",
            "",
            "| task | model | seconds | NSF / this |",
            "|---|---|---:|---:|",
        ]
        for r in payload["sampling"]:
            nsf = next(
                q["seconds"]
                for q in payload["sampling"]
                if q["task"] == r["task"] and "NSF" in q["model"]
            )
            lines.append(
                f"| {r['task']} | {r['model']} | {r['seconds']:.3f} | {nsf / r['seconds']:.1f}x |"
            )
    if payload.get("ablation"):
        lines += [
            "",
            "## Ablation (SAEF K=1, 10^4 simulations; `s`: seconds per run)",
            "",
            "Rows marked * were measured before the strong judges: their C2ST is the sbibm MLP "
            "C2ST, which the compare table above shows reading below the strong one.",
            "",
            "| task | variant | s | C2ST |",
            "|---|---|---:|---:|",
        ]
        for r in payload["ablation"]:
            mark = "" if "c2st_mlp" in r else "*"
            lines.append(
                f"| {r['task']} | {r['variant']} | {r.get('budget', 20):.0f} | "
                f"{r['c2st'][0]:.3f} +- {r['c2st'][1]:.3f}{mark} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("compare", "ablation", "sampling"), required=True)
    parser.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"])
    parser.add_argument("--sims", type=int, nargs="+", default=[10000])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--observations", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=None, help="words in the model names")
    parser.add_argument(
        "--variants", nargs="+", default=None, help="words in the ablation variants' names"
    )
    parser.add_argument("--c2st-draws", type=int, default=1000)
    args = parser.parse_args()
    path = RESULTS / "study_posterior.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.update(
        machine=machine_description("cpu"),
        budget=args.budget,
        observations=args.observations,
        c2st_draws=args.c2st_draws,
    )

    def save(rows: list[dict]) -> None:
        payload[args.part] = rows
        path.write_text(json.dumps(payload, indent=1))
        (RESULTS / "study_posterior.md").write_text(markdown(payload["machine"], payload))

    run = {"compare": run_compare, "ablation": run_ablation, "sampling": run_sampling}[args.part]
    save(run(args, payload, save))
    print((RESULTS / "study_posterior.md").read_text())


if __name__ == "__main__":
    main()
