"""``energyflow posterior``: simulate (or read) pairs, train a posterior, sample the observations.

    energyflow posterior --task two_moons --sims 10000 --time-budget 60 --out runs/moons-post
    energyflow posterior --theta theta.npy --x x.npy --observation xo.npy \\
        --prior-low -3 --prior-high 3 --out runs/mine

Writes to ``--out`` (new or empty): ``posterior.pt`` (``load_posterior``), ``samples.npy``
(``--n`` draws per observation, (n, observations, D)), ``corner_<i>.png`` per observation
(against the reference posterior for a task) and ``metrics.json`` (training seconds and steps,
sampling seconds; for a task the C2ST of every observation against its reference and the mean,
by the strong judge and by sbibm's MLP).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from energyflow import metrics
from energyflow._io import atomic_npy, atomic_write_json, read_matrix_npy
from energyflow.cli.arguments import number
from energyflow.inference.plots import corner_plot
from energyflow.inference.posterior import SUPPORTS, fit_posterior
from energyflow.inference.priors import BoxPrior, Prior
from energyflow.inference.tasks import TASKS, get_task
from energyflow.training.config import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, POSITIVE, Rule

__all__ = ["add_posterior_command", "cmd_posterior"]


def _read_matrix(path: str, flag: str) -> torch.Tensor:
    return torch.as_tensor(read_matrix_npy(path, flag))


def _box(args: argparse.Namespace, dim: int) -> Optional[Prior]:
    if args.prior_low is None and args.prior_high is None:
        return None
    if args.prior_low is None or args.prior_high is None:
        raise ValueError("--prior-low and --prior-high go together (a box prior)")
    low, high = (torch.tensor(v, dtype=torch.float32) for v in (args.prior_low, args.prior_high))
    if len(low) == 1:
        low, high = low.expand(dim).clone(), high.expand(dim).clone()
    if len(low) != dim or len(high) != dim:
        raise ValueError(f"--prior-low/--prior-high need 1 or {dim} values each")
    try:
        return BoxPrior(low, high)
    except ValueError as err:
        raise ValueError(f"--prior-low/--prior-high: {err}") from None


def _inputs(args: argparse.Namespace):
    """(theta, x, observations, prior, task or None) from a task or from files."""
    if args.task is not None:
        if any(v is not None for v in (args.theta, args.x, args.observation)):
            raise ValueError("--task simulates its own data; drop --theta/--x/--observation")
        task = get_task(args.task)
        theta, x = task.simulations(args.sims, seed=args.seed)
        return theta, x, task.observations, task.prior, task
    missing = [
        f
        for f, v in (("--theta", args.theta), ("--x", args.x), ("--observation", args.observation))
        if v is None
    ]
    if missing:
        raise ValueError(
            "give --task NAME, or all of --theta, --x, --observation (missing: "
            f"{', '.join(missing)})"
        )
    theta, x = _read_matrix(args.theta, "--theta"), _read_matrix(args.x, "--x")
    observations = _read_matrix(args.observation, "--observation")
    if observations.shape[1] != x.shape[1]:
        if observations.shape == (x.shape[1], 1):  # one observation saved as a vector
            observations = observations.T
        else:
            raise ValueError(
                f"--observation: rows of {x.shape[1]} values (like --x), got shape "
                f"{tuple(observations.shape)}"
            )
    return theta, x, observations, _box(args, theta.shape[1]), None


def cmd_posterior(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise ValueError(
            f"--out {out} exists and is not empty; choose a new folder or pass --overwrite"
        )
    theta, x, observations, prior, task = _inputs(args)
    torch.manual_seed(args.seed)
    settings = {
        name: getattr(args, name)
        for name in (
            "steps",
            "time_budget",
            "batch_size",
            "lr",
            "samples_per_target",
            "seed",
            "device",
        )
    }
    posterior = fit_posterior(
        theta,
        x,
        model=args.model,
        prior=prior,
        support=args.support,
        blocks=args.blocks or None,
        hidden_features=tuple(args.hidden) if args.hidden else None,
        objective=args.objective,
        progress=True,
        **settings,
    )
    out.mkdir(parents=True, exist_ok=True)
    posterior.model.cpu()
    posterior.save(out / "posterior.pt")
    start = time.perf_counter()
    draws = posterior.sample(args.n, observations)
    seconds = time.perf_counter() - start
    with atomic_npy(out / "samples.npy", tuple(draws.shape)) as array:
        array[...] = draws.numpy()
    result = {
        "train_seconds": posterior.state.seconds,
        "steps": posterior.state.step,
        "best_step": posterior.state.best_step,
        "sample_seconds": seconds,
        "draws_per_observation": args.n,
        "observations": len(observations),
    }
    if posterior.last_acceptance_rate is not None:
        result["acceptance_rate"] = posterior.last_acceptance_rate
    judged: dict[str, list[float]] = {"c2st": [], "c2st_mlp": []}
    for index in tqdm(range(len(observations)), desc="judging and plotting", unit="observation"):
        reference = task.reference_posterior(index, args.c2st_draws) if task is not None else None
        title = f"observation {index}"
        if reference is not None:
            ours = draws[: args.c2st_draws, index]
            judged["c2st"].append(metrics.c2st(ours, reference, seed=args.seed))
            judged["c2st_mlp"].append(metrics.c2st_mlp(ours, reference, seed=args.seed))
            title += f", C2ST {judged['c2st'][-1]:.3f}"
        corner_plot(
            draws[:, index],
            out / f"corner_{index}.png",
            reference=reference,
            truth=None if task is None else task.true_parameters[index],
            title=title,
        )
    for name, scores in judged.items():
        if scores:
            result[name] = scores
            result[f"{name}_mean"] = float(np.mean(scores))
    atomic_write_json(result, out / "metrics.json")
    summary = (
        f", mean C2ST {result['c2st_mean']:.3f} (sbibm MLP C2ST {result['c2st_mlp_mean']:.3f})"
        if "c2st" in result
        else ""
    )
    print(
        f"posterior: {out / 'posterior.pt'}; samples {tuple(draws.shape)} -> "
        f"{out / 'samples.npy'}{summary}"
    )
    return 0


def add_posterior_command(commands, common: argparse.ArgumentParser) -> None:
    """The ``posterior`` sub-command."""
    types = {
        "positive": number(int, AT_LEAST_1),
        "non_negative": number(int, NON_NEGATIVE),
        "at_least_2": number(int, AT_LEAST_2),
        "at_least_10": number(int, Rule(lambda v: v >= 10, "an integer >= 10")),
        "positive_float": number(float, POSITIVE),
    }
    command = commands.add_parser(
        "posterior",
        help="simulation-based inference: train and sample a posterior",
        parents=[common],
        allow_abbrev=False,
    )
    add = command.add_argument
    add(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="a built-in task with reference posteriors",
    )
    add("--sims", type=types["positive"], default=10000, help="simulations for --task")
    add("--theta", default=None, help=".npy of parameters (N, D)")
    add("--x", default=None, help=".npy of simulated data (N, C)")
    add("--observation", default=None, help=".npy of observations (B, C) to sample")
    add("--prior-low", type=float, nargs="+", default=None, help="box prior lower bounds")
    add("--prior-high", type=float, nargs="+", default=None, help="box prior upper bounds")
    add("--support", choices=SUPPORTS, default="transform", help="how a box prior bounds the draws")
    add("--model", choices=("saef", "affine"), default="saef")
    add("--objective", choices=("energy", "mle", "hybrid"), default="energy")
    add("--blocks", type=types["non_negative"], default=0, help="K (0: saef 1, affine min(D, 4))")
    add(
        "--hidden",
        type=types["positive"],
        nargs="+",
        default=None,
        help="hidden widths (default: saef 128 128, affine 256 256)",
    )
    add("--samples-per-target", type=types["at_least_2"], default=None, help="m (4)")
    add(
        "--steps",
        type=types["positive"],
        default=None,
        help="step cap (default: none; the time budget is the run's length)",
    )
    add("--time-budget", type=types["positive_float"], default=60.0, help="training seconds")
    add("--batch-size", type=types["at_least_2"], default=None, help="rows per step (256)")
    add("--lr", type=types["positive_float"], default=None, help="learning rate (1e-3)")
    add("--n", type=types["positive"], default=10000, help="draws per observation")
    add("--c2st-draws", type=types["at_least_10"], default=2000, help="draws per C2ST (task)")
    add("--device", default="auto")
    add("--seed", type=int, default=0)
    add("--out", required=True, help="output folder (new or empty)")
    add("--overwrite", action="store_true", help="write into a non-empty folder")
    command.set_defaults(func=cmd_posterior)
