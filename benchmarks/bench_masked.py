"""Block-masked layers: skipping the zero blocks vs the dense masked reference, in one run.

1. One hidden->hidden ``BlockMaskedLinear`` (non-strict, K levels, density (K+1)/(2K)), batch
   4096, hidden 1024: forward and forward+backward of the fused path ("blocked" on CPU, "triton"
   on CUDA) against ``F.linear(x, W * mask, b)`` (what nflows / zuko do).
2. Generation with a ``SemiAutoregressiveMLP`` (64 features, 64 noise, hidden (1024, 1024)):
   cached K-step sampling (``generate``) against K full passes (the uncached way) and
   against a single full pass.

Median of repeats after a warm-up, the compared calls timed in turn (interleaved). Writes
``benchmarks/results/masked_<device>.{json,md}``.

    python benchmarks/bench_masked.py [--device cuda --hidden 4096 --batch 8192]
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import torch

from _common import RESULTS, interleaved_medians, machine_description
from energyflow.nn import BlockMaskedLinear, SemiAutoregressiveMLP


def layer_rows(device: str, batch: int, hidden: int, blocks: list[int], repeats: int) -> list[dict]:
    fused = "triton" if device == "cuda" else "blocked"
    rows = []
    for k in blocks:
        levels = [level for level in range(k) for _ in range(hidden // k + (level < hidden % k))]
        layer = BlockMaskedLinear(levels, levels, strict=False, activation="relu").to(device)
        x = torch.randn(batch, hidden, device=device, requires_grad=True)
        row = {"K": k, "batch": batch, "hidden": hidden, "density": layer.plan.density()}
        for mode in ("forward", "forward+backward"):

            def call(backend: str, mode: str = mode) -> Callable[[], None]:
                def run() -> None:
                    layer.backend = backend
                    if mode == "forward":
                        with torch.no_grad():
                            layer(x)
                    else:
                        x.grad = None
                        layer.zero_grad(set_to_none=True)
                        layer(x).sum().backward()

                return run

            times = interleaved_medians({b: call(b) for b in ("reference", fused)}, device, repeats)
            row[f"{mode} reference s"] = times["reference"]
            row[f"{mode} {fused} s"] = times[fused]
            row[f"{mode} speedup"] = times["reference"] / times[fused]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def generation_rows(
    device: str, batch: int, hidden: int, blocks: list[int], repeats: int
) -> list[dict]:
    rows = []
    features = 64
    for k in blocks:
        net = SemiAutoregressiveMLP(
            features, k, noise_features=features, hidden_features=(hidden, hidden)
        ).to(device)
        z = torch.randn(batch, features, device=device)
        sizes = net.block_sizes

        @torch.no_grad()
        def cached() -> None:
            net.generate(z)

        @torch.no_grad()
        def uncached() -> None:
            x = torch.zeros(batch, features, device=device)
            offset = 0
            for size in sizes:
                x[:, offset : offset + size] = net(x, z)[:, offset : offset + size]
                offset += size

        @torch.no_grad()
        def one_pass() -> None:
            net(torch.zeros(batch, features, device=device), z)

        times = interleaved_medians(
            {"cached": cached, "uncached": uncached, "one": one_pass}, device, repeats
        )
        t_cached, t_uncached, t_one = times["cached"], times["uncached"], times["one"]
        row = {
            "K": k,
            "cached K-step s": t_cached,
            "K full passes s": t_uncached,
            "one full pass s": t_one,
            "cached / one pass": t_cached / t_one,
            "K passes / cached": t_uncached / t_cached,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(machine: dict, layers: list[dict], generation: list[dict], fused: str) -> str:
    gpu = f" ({machine['gpu']})" if "gpu" in machine else ""
    first = layers[0]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"device {machine['device']}{gpu}",
        "",
        f"One hidden->hidden BlockMaskedLinear (relu), batch {first['batch']}, hidden "
        f"{first['hidden']}: `{fused}` vs dense `F.linear(x, W * mask)`; speedup = reference / "
        f"{fused} (same run), ideal = 1 / density.",
        "",
        "| K | density | ideal | forward speedup | fwd+bwd speedup | fwd+bwd reference s "
        "| fwd+bwd fused s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in layers:
        cells = [
            r["K"],
            f"{r['density']:.3f}",
            f"{1 / r['density']:.2f}x",
            f"{r['forward speedup']:.2f}x",
            f"{r['forward+backward speedup']:.2f}x",
            f"{r['forward+backward reference s']:.4f}",
            f"{r[f'forward+backward {fused} s']:.4f}",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += [
        "",
        "Generation, SemiAutoregressiveMLP(64 features, 64 noise, hidden (H, H)), no grad:",
        "",
        "| K | cached K-step s | K full passes s | one full pass s | cached / one pass "
        "| K passes / cached |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in generation:
        cells = [
            r["K"],
            f"{r['cached K-step s']:.4f}",
            f"{r['K full passes s']:.4f}",
            f"{r['one full pass s']:.4f}",
            f"{r['cached / one pass']:.2f}x",
            f"{r['K passes / cached']:.2f}x",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    machine = machine_description(args.device)
    fused = "triton" if args.device == "cuda" else "blocked"
    layers = layer_rows(args.device, args.batch, args.hidden, args.blocks, args.repeats)
    generation = generation_rows(args.device, args.batch, args.hidden, args.blocks, args.repeats)
    stem = args.name or f"masked_{args.device}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "layers": layers, "generation": generation}, indent=1)
    )
    table = markdown(machine, layers, generation, fused)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
