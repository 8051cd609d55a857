"""Fused energy losses against what a user would write instead, timed in one run.

1. ``energy_distance`` forward+backward, N = M, for two set-ups: ``train`` (only the model
   samples y require grad, as in training) and ``both`` (x and y require grad). Rows:

   - ``energyflow``: ``ef.energy_distance(x, y)`` (C++ on CPU, Triton on CUDA);
   - ``plain torch``: ``2*cdist(x,y).mean() - cdist(x,x).mean() - cdist(y,y).mean()`` with
     torch's default ``cdist`` (the headline baseline: what a user writes in three lines);
   - ``reference (exact differences)``: energyflow's own oracle, ``backend="reference"``, only
     when ``--baselines`` names it (it keeps every difference x_i - y_j in float64, to be
     differentiable twice, and its buffers slow the calls timed beside it);
   - ``keops``: the same three means with ``pykeops`` LazyTensors (no N x M buffer);
   - ``geomloss``: ``SamplesLoss("energy")`` (computes ED / 2; tensorized backend).

   Baselines whose N x M matrices exceed the memory budget, or that would take minutes, are
   skipped and say so. Speedup = baseline seconds / energyflow seconds, measured in the same
   run with interleaved repeats.
2. ``energy_score`` forward+backward (samples require grad), B targets with m samples each, D
   features, against the broadcast ``(B, m, m, D)`` version of the paper's code.
3. beta = 0.7 against beta = 1 (the general power against the square root), and
   ``sliced_energy_distance`` at N = M = 10^6.

Writes ``benchmarks/results/<name>.json`` and ``.md`` (with the machine description) and prints
the markdown tables.

    python benchmarks/bench_energy.py                # the CPU grid of the README
    python benchmarks/bench_energy.py --device cuda  # Triton on a GPU
    python benchmarks/bench_energy.py --parts score  # rerun one part, keep the others' rows
    python benchmarks/bench_energy.py --parts distance --sizes 1024 --repeats 11  # one size
    python benchmarks/bench_energy.py --baselines "plain torch"  # keep KeOps/GeomLoss rows
"""

from __future__ import annotations

import argparse
import json
from typing import Callable, Optional

import torch

import energyflow as ef
from _common import RESULTS, machine_description, measure, write_results

Step = Callable[[], None]
FUSED = "energyflow"
PLAIN = "plain torch"


def _zero_grads(*tensors: torch.Tensor) -> None:
    for t in tensors:
        t.grad = None


def fused_step(x: torch.Tensor, y: torch.Tensor, beta: float = 1.0, backend: str = "auto") -> Step:
    def step() -> None:
        _zero_grads(x, y)
        ef.energy_distance(x, y, beta=beta, backend=backend).backward()

    return step


def plain_torch_step(x: torch.Tensor, y: torch.Tensor) -> Step:
    def step() -> None:
        _zero_grads(x, y)
        loss = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
        loss.backward()

    return step


def keops_step(x: torch.Tensor, y: torch.Tensor) -> Optional[Step]:
    try:
        from pykeops.torch import LazyTensor
    except ImportError:
        return None

    def mean_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        d2 = ((LazyTensor(p[:, None, :]) - LazyTensor(q[None, :, :])) ** 2).sum(-1)
        return d2.sqrt().sum(1).sum() / (p.shape[0] * q.shape[0])

    def step() -> None:
        _zero_grads(x, y)
        (2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y)).backward()

    return step


def geomloss_step(x: torch.Tensor, y: torch.Tensor) -> Optional[Step]:
    try:
        from geomloss import SamplesLoss
    except ImportError:
        return None
    loss = SamplesLoss("energy")

    def step() -> None:
        _zero_grads(x, y)
        loss(x, y).backward()

    return step


REFERENCE = "reference (exact differences)"
BASELINES = (PLAIN, REFERENCE, "keops", "geomloss")
SLOW_LIBRARIES = ("keops", "geomloss")
PARTS = ("distance", "score", "beta", "sliced")
# the energy-score calls take about a millisecond: a stable median needs more of them
SHORT_CALL_REPEATS = 15


def baseline_step(name: str, x: torch.Tensor, y: torch.Tensor) -> Optional[Step]:
    """The step of baseline ``name`` (None where its library is not installed)."""
    if name == PLAIN:
        return plain_torch_step(x, y)
    if name == REFERENCE:
        return fused_step(x, y, backend="reference")
    return keops_step(x, y) if name == "keops" else geomloss_step(x, y)


def warm_up(device: str, baselines: tuple[str, ...]) -> tuple[str, ...]:
    """One call of every method on tiny inputs before anything is measured: one-time start-up
    costs belong to the process, not to a problem size (the first call of any
    ``torch.library`` custom op imports ``torch._dynamo``, ~145 MB of Python modules; KeOps
    compiles its formulas). Returns the baselines that ran: one that fails here (a KeOps that
    cannot compile on this machine, say) is left out of the tables with a printed reason."""
    x = torch.randn(64, 4, device=device, requires_grad=True)
    y = torch.randn(64, 4, device=device, requires_grad=True)
    fused_step(x, y)()
    working = []
    for name in baselines:
        step = baseline_step(name, x, y)
        if step is None:
            continue
        try:
            step()
        except Exception as error:  # a baseline library broken here must not stop the run
            print(f"baseline {name!r} left out: {type(error).__name__}: {error}"[:500])
            continue
        working.append(name)
    return tuple(working)


def distance_rows(
    device: str,
    sizes: list[int],
    dims: list[int],
    repeats: int,
    budget: float,
    slow_limit: int,
    baselines: tuple[str, ...] = BASELINES,
) -> list[dict]:
    rows = []
    for n in sizes:
        for d in dims:
            for setup in ("train", "both"):
                x = torch.randn(n, d, device=device, requires_grad=setup == "both")
                y = (torch.randn(n, d, device=device) * 1.2 + 0.3).requires_grad_()
                matrix_bytes = 4.0 * n * n * 4  # a few N x M fp32 matrices per term at once
                calls: dict[str, Step] = {FUSED: fused_step(x, y)}
                notes: dict[str, str] = {}
                for name in baselines:
                    # the reference differentiates twice: it keeps every x_i - y_j in fp64
                    reference_bytes = 3 * 8.0 * n * n * d
                    if name != "keops" and matrix_bytes > budget:
                        gib = matrix_bytes / 2**30
                        notes[name] = f"skipped: N x M matrices need ~{gib:.0f} GiB"
                    elif name == REFERENCE and reference_bytes > budget / 4:
                        gib = reference_bytes / 2**30
                        notes[name] = f"skipped: N x M x D differences need ~{gib:.0f} GiB"
                    elif n > slow_limit or (name == REFERENCE and n > 4096):
                        notes[name] = "skipped: would take minutes at this size"
                    else:
                        step = baseline_step(name, x, y)
                        if step is None:
                            notes[name] = f"{name} not installed"
                        else:
                            calls[name] = step
                # the libraries that take a minute a call at N = 16384 are timed once there
                slow = {k: v for k, v in calls.items() if n > 4096 and k in SLOW_LIBRARIES}
                reps = {k: 1 if k in slow else (repeats if n <= 16384 else 0) for k in calls}
                results = measure(
                    {k: v for k, v in calls.items() if k not in slow}, device, reps[FUSED]
                )
                results.update(measure(slow, device, 1) if slow else {})
                fused_seconds = results[FUSED][0]
                for name in [FUSED, *baselines]:
                    row = {"N": n, "M": n, "D": d, "setup": setup, "method": name}
                    if name in results:
                        seconds, peak = results[name]
                        row.update(seconds=seconds, peak_extra_mb=peak / 2**20, repeats=reps[name])
                        if name != FUSED:
                            row["speedup"] = seconds / fused_seconds
                    else:
                        row["note"] = notes[name]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del x, y, calls
    return rows


def with_kept_baselines(fresh: list[dict], saved: list[dict], measured: str) -> list[dict]:
    """``fresh`` rows, plus the saved rows of the slow libraries (KeOps, GeomLoss) not run this
    time (``--baselines`` names fewer), their speedups recomputed against this run's
    energyflow seconds and marked with the date they were measured (a minute-a-call library
    need not rerun with every change of the fused kernels)."""
    ran = {(r["N"], r["D"], r["setup"], r["method"]) for r in fresh}
    ours = {(r["N"], r["D"], r["setup"]): r for r in fresh if r["method"] == FUSED}
    rows = list(fresh)
    for old in saved:
        key = (old["N"], old["D"], old["setup"])
        if (*key, old["method"]) in ran or key not in ours or old["method"] not in SLOW_LIBRARIES:
            continue
        kept = {**old, "measured": old.get("measured", measured)}
        if "seconds" in kept and "seconds" in ours[key]:
            kept["speedup"] = kept["seconds"] / ours[key]["seconds"]
        rows.append(kept)
    order = {name: i for i, name in enumerate((FUSED, *BASELINES))}
    return sorted(rows, key=lambda r: (r["N"], r["D"], r["setup"] != "train", order[r["method"]]))


def broadcast_energy_score(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The energy score as the paper's code writes it: (B, m, m, D) differences."""
    m = samples.shape[1]
    to_target = (samples - target[:, None, :]).norm(dim=-1).mean(1)
    spread = (samples[:, :, None, :] - samples[:, None, :, :]).norm(dim=-1).sum((1, 2))
    return (to_target - spread / (2 * m * (m - 1))).mean()


def score_rows(
    device: str, batches: list[int], ms: list[int], dims: list[int], repeats: int, budget: float
) -> list[dict]:
    rows = []
    for b in batches:
        for m in ms:
            for d in dims:
                samples = torch.randn(b, m, d, device=device, requires_grad=True)
                target = torch.randn(b, d, device=device)

                def fused() -> None:
                    samples.grad = None
                    ef.energy_score(samples, target).backward()

                def broadcast() -> None:
                    samples.grad = None
                    broadcast_energy_score(samples, target).backward()

                calls: dict[str, Step] = {FUSED: fused}
                broadcast_bytes = 4.0 * b * m * m * d * 4
                row = {"B": b, "m": m, "D": d}
                if broadcast_bytes <= budget:
                    calls["broadcast"] = broadcast
                else:
                    row["note"] = (
                        f"broadcast skipped: (B, m, m, D) needs ~{broadcast_bytes / 2**30:.0f} GiB"
                    )
                results = measure(calls, device, max(repeats, SHORT_CALL_REPEATS))
                row["energyflow s"], row["energyflow peak mb"] = (
                    results[FUSED][0],
                    results[FUSED][1] / 2**20,
                )
                if "broadcast" in results:
                    row["broadcast s"] = results["broadcast"][0]
                    row["broadcast peak mb"] = results["broadcast"][1] / 2**20
                    row["speedup"] = row["broadcast s"] / row["energyflow s"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def beta_rows(device: str, n: int, dims: list[int], repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        x = torch.randn(n, d, device=device, requires_grad=True)
        y = torch.randn(n, d, device=device, requires_grad=True)
        calls = {f"beta={beta}": fused_step(x, y, beta=beta) for beta in (1.0, 0.7)}
        results = measure(calls, device, repeats)
        row = {
            "N": n,
            "D": d,
            "beta=1 s": results["beta=1.0"][0],
            "beta=0.7 s": results["beta=0.7"][0],
        }
        row["cost ratio"] = row["beta=0.7 s"] / row["beta=1 s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def sliced_row(device: str, n: int, d: int, projections: int) -> dict:
    x = torch.randn(n, d, device=device, requires_grad=True)
    y = (torch.randn(n, d, device=device) + 0.1).requires_grad_()

    def step() -> None:
        ef.sliced_energy_distance(x, y, num_projections=projections).backward()

    seconds, peak = measure({"sliced": step}, device, 0)["sliced"]
    row = {"N": n, "D": d, "L": projections, "seconds": seconds, "peak_extra_mb": peak / 2**20}
    print(json.dumps(row), flush=True)
    return row


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _score_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "### energy_score, forward+backward (samples require grad)",
        "",
        "against the broadcast `(B, m, m, D)` version of the paper's code (medians of at least "
        f"{SHORT_CALL_REPEATS} interleaved calls: most take about a millisecond).",
        "",
    ]
    cells = []
    for r in rows:
        broadcast = (
            [f"{r['broadcast s']:.5f}", f"**{r['speedup']:.1f}x**", f"{r['broadcast peak mb']:.0f}"]
            if "speedup" in r
            else ["-", "-", r.get("note", "")]
        )
        ours = [f"{r['energyflow s']:.5f}", f"{r['energyflow peak mb']:.0f}"]
        cells.append([str(r["B"]), str(r["m"]), str(r["D"]), *ours, *broadcast])
    header = ["B", "m", "D", "energyflow s", "peak (MB)", "broadcast s", "speedup", "peak (MB)"]
    return lines + _table(header, cells)


def _beta_table(rows: list[dict]) -> list[str]:
    lines = ["", "### General beta: energy_distance fwd+bwd (both), beta = 0.7 vs beta = 1", ""]
    cells = [
        [str(r["N"]), str(r["D"]), f"{r['beta=1 s']:.4f}", f"{r['beta=0.7 s']:.4f}"]
        + [f"{r['cost ratio']:.2f}x"]
        for r in rows
    ]
    return lines + _table(["N = M", "D", "beta = 1 s", "beta = 0.7 s", "cost of 0.7"], cells)


def markdown(machine: dict, results: dict) -> str:
    gpu = f" ({machine['gpu']}, triton {machine.get('triton')})" if "gpu" in machine else ""
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch "
        f"threads), torch {machine['torch']}, device {machine['device']}{gpu}",
        "",
        "### energy_distance, forward+backward",
        "",
        "Median seconds (interleaved repeats; at N = 16384 KeOps and GeomLoss are timed once, "
        "the first call at 65536); speedup = baseline seconds / energyflow seconds in the same "
        "run; peak = extra peak memory of one call, after a warm-up call of every method on "
        "tiny inputs (one-time start-up, such as the ~145 MB of modules the first custom-op "
        "call imports, is not counted). `train`: only y requires grad; `both`: x and y do.",
        "",
    ]
    cells = []
    for r in results["distance"]:
        if "seconds" in r:
            speed = f"**{r['speedup']:.1f}x**" if "speedup" in r else "-"
            timing = [f"{r['seconds']:.4f}", speed, f"{r['peak_extra_mb']:.0f}"]
        else:
            timing = ["-", "-", r["note"]]
        method = r["method"] + (f" ({r['measured']})" if "measured" in r else "")
        cells.append([str(r["N"]), str(r["D"]), r["setup"], method, *timing])
    lines += _table(
        ["N = M", "D", "setup", "method", "seconds", "energyflow speedup", "peak extra (MB)"], cells
    )
    if results["score"]:
        lines += _score_table(results["score"])
    if results["beta"]:
        lines += _beta_table(results["beta"])
    sliced = results.get("sliced")
    if sliced:
        lines += [
            "",
            f"`sliced_energy_distance`, N = M = {sliced['N']}, D = {sliced['D']}, "
            f"L = {sliced['L']}, forward+backward: {sliced['seconds']:.1f} s, "
            f"peak extra {sliced['peak_extra_mb']:.0f} MB.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--score-batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--score-ms", type=int, nargs="+", default=[2, 4, 10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--matrix-budget-gb",
        type=float,
        default=None,
        help="skip baselines whose N x M matrices exceed this (default: 8 on CPU, 60 on CUDA)",
    )
    parser.add_argument(
        "--slow-limit", type=int, default=16384, help="largest N at which baselines run"
    )
    parser.add_argument("--sliced-n", type=int, default=1_000_000, help="0 skips the sliced run")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="parts to run; the others are kept from the results file, if there is one",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=BASELINES,
        default=[PLAIN, *SLOW_LIBRARIES],
        metavar="NAME",
        help=f"baselines to time (default: all but {REFERENCE!r}, the correctness oracle, whose "
        "N x M x D buffers would slow the calls timed beside it)",
    )
    parser.add_argument("--name", default=None, help="results file stem (default energy_<device>)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    budget = (args.matrix_budget_gb or (60.0 if args.device == "cuda" else 8.0)) * 2**30
    torch.manual_seed(0)
    machine = machine_description(args.device)
    stem = args.name or f"energy_{args.device}"
    saved = RESULTS / f"{stem}.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    saved_machine = results.get("machine", {})
    results = {part: results.get(part, []) for part in PARTS}
    baselines = warm_up(args.device, tuple(args.baselines))
    if "distance" in args.parts:
        fresh = distance_rows(
            args.device,
            args.sizes,
            args.dims,
            args.repeats,
            budget,
            args.slow_limit,
            baselines,
        )
        measured = f"measured {saved_machine['date']}" if "date" in saved_machine else "earlier run"
        other_sizes = [r for r in results["distance"] if r["N"] not in args.sizes]
        rerun = with_kept_baselines(fresh, results["distance"], measured)
        results["distance"] = sorted(other_sizes + rerun, key=lambda r: r["N"])
    if "score" in args.parts:
        results["score"] = score_rows(
            args.device, args.score_batches, args.score_ms, args.dims, args.repeats, budget
        )
    if "beta" in args.parts:
        results["beta"] = beta_rows(args.device, 4096, args.dims, args.repeats)
    if "sliced" in args.parts and args.sliced_n:
        results["sliced"] = sliced_row(args.device, args.sliced_n, 16, 64)
    write_results(stem, {"machine": machine, **results}, markdown(machine, results))


if __name__ == "__main__":
    main()
