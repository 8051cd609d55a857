"""Forward+backward energy distance: fused backends against the cdist baseline, in one run.

For each (N = M, D) of the grid, times ``energy_distance(x, y).backward()`` (both sets require
grad; median of repeats after a warm-up) and measures the extra peak memory of one call, for the
fused backend of the device (C++ on CPU, Triton on CUDA) and for the baselines: the
``torch.cdist`` reference (``backend="reference"``) and, when installed, KeOps and GeomLoss.
Baselines whose N x M matrices would not fit the memory budget are skipped and say so. Also
times ``sliced_energy_distance`` at N = M = 10^6, D = 16, L = 64.

Writes ``benchmarks/results/<name>.json`` and ``.md`` (with the machine description) and prints
the markdown table.

    python benchmarks/bench_energy.py                # CPU grid of the README
    python benchmarks/bench_energy.py --device cuda  # Triton vs cdist on a GPU
"""

from __future__ import annotations

import argparse
import json
from typing import Callable, Optional

import torch

import energyflow as ef
from _common import RESULTS, machine_description, time_call


def energy_step(backend: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = y.grad = None
        ef.energy_distance(x, y, backend=backend).backward()

    return step


def keops_step(x: torch.Tensor, y: torch.Tensor) -> Optional[Callable[[], None]]:
    try:
        from pykeops.torch import LazyTensor
    except ImportError:
        return None

    def term(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        d2 = ((LazyTensor(p[:, None, :]) - LazyTensor(q[None, :, :])) ** 2).sum(-1)
        return d2.sqrt().sum(1).sum() / (p.shape[0] * q.shape[0])

    def step() -> None:
        x.grad = y.grad = None
        (2 * term(x, y) - term(x, x) - term(y, y)).backward()

    return step


def geomloss_step(x: torch.Tensor, y: torch.Tensor) -> Optional[Callable[[], None]]:
    try:
        from geomloss import SamplesLoss
    except ImportError:
        return None
    loss = SamplesLoss("energy")

    def step() -> None:
        x.grad = y.grad = None
        loss(x, y).backward()

    return step


def run_grid(
    device: str, sizes: list[int], dims: list[int], repeats: int, matrix_budget: float
) -> list[dict]:
    fused = "triton" if device == "cuda" else "cpp"
    rows = []
    for n in sizes:
        for d in dims:
            x = torch.randn(n, d, device=device, requires_grad=True)
            y = (torch.randn(n, d, device=device) * 1.2 + 0.3).requires_grad_()
            reps = repeats if n <= 4096 else 0
            # the reference holds a few N x M fp32 matrices per term at once
            matrix_bytes = 4.0 * n * n * 4
            candidates: list[tuple[str, Optional[Callable[[], None]], str]] = [
                (fused, energy_step(fused, x, y), ""),
            ]
            if matrix_bytes <= matrix_budget:
                candidates.append(("cdist reference", energy_step("reference", x, y), ""))
                candidates.append(("keops", keops_step(x, y), "pykeops not installed"))
                candidates.append(("geomloss", geomloss_step(x, y), "geomloss not installed"))
            else:
                note = f"skipped: N x M matrices need ~{matrix_bytes / 2**30:.0f} GiB"
                candidates.append(("cdist reference", None, note))
            fused_seconds = None
            for name, step, why_not in candidates:
                row = {"N": n, "M": n, "D": d, "method": name}
                if step is None:
                    row["note"] = why_not
                else:
                    seconds, peak = time_call(step, device, reps)
                    row.update(seconds=seconds, peak_extra_mb=peak / 2**20, repeats=reps)
                    if name == fused:
                        fused_seconds = seconds
                    elif fused_seconds:
                        row["fused_speedup"] = seconds / fused_seconds
                rows.append(row)
                print(json.dumps(row), flush=True)
            del x, y
    return rows


def run_sliced(device: str, n: int, d: int, projections: int) -> dict:
    x = torch.randn(n, d, device=device, requires_grad=True)
    y = (torch.randn(n, d, device=device) + 0.1).requires_grad_()

    def step() -> None:
        ef.sliced_energy_distance(x, y, num_projections=projections).backward()

    seconds, peak = time_call(step, device, 0)
    row = {
        "N": n,
        "M": n,
        "D": d,
        "L": projections,
        "method": "sliced_energy_distance (fwd+bwd)",
        "seconds": seconds,
        "peak_extra_mb": peak / 2**20,
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(machine: dict, rows: list[dict], sliced: Optional[dict]) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch "
        "threads), "
        f"torch {machine['torch']}, device {machine['device']}"
        + (f" ({machine['gpu']}, triton {machine.get('triton')})" if "gpu" in machine else ""),
        "",
        "Forward+backward `energy_distance` (both sets require grad), median seconds; "
        "speedup = baseline time / fused time, measured in the same run; peak = extra peak memory.",
        "",
        "| N = M | D | method | seconds | fused speedup | peak extra (MB) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "seconds" in r:
            speed = f"{r['fused_speedup']:.1f}x" if "fused_speedup" in r else "-"
            lines.append(
                f"| {r['N']} | {r['D']} | {r['method']} | {r['seconds']:.4f} | {speed} | "
                f"{r['peak_extra_mb']:.0f} |"
            )
        else:
            lines.append(f"| {r['N']} | {r['D']} | {r['method']} | - | - | {r['note']} |")
    if sliced:
        lines += [
            "",
            f"`sliced_energy_distance`, N = M = {sliced['N']}, D = {sliced['D']}, L = "
            f"{sliced['L']}, "
            f"forward+backward: {sliced['seconds']:.1f} s, peak extra "
            f"{sliced['peak_extra_mb']:.0f} MB.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--matrix-budget-gb",
        type=float,
        default=None,
        help="skip baselines whose N x M matrices exceed this (default: 8 on CPU, 60 on CUDA)",
    )
    parser.add_argument("--sliced-n", type=int, default=1_000_000, help="0 skips the sliced run")
    parser.add_argument("--name", default=None, help="results file stem (default energy_<device>)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    budget = (args.matrix_budget_gb or (60.0 if args.device == "cuda" else 8.0)) * 2**30
    torch.manual_seed(0)
    machine = machine_description(args.device)
    rows = run_grid(args.device, args.sizes, args.dims, args.repeats, budget)
    sliced = run_sliced(args.device, args.sliced_n, 16, 64) if args.sliced_n else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"energy_{args.device}"
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "rows": rows, "sliced": sliced}, indent=1)
    )
    table = markdown(machine, rows, sliced)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
