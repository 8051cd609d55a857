"""Semi-autoregressive networks against the masked MADE a user already has, in one run.

Each row is one ``SemiAutoregressiveMLP(D features, K blocks, D noise, hidden (H, H))`` with
the ``auto`` backend, against the same network written as nflows / zuko write a MADE
(``F.linear(h, weight * mask, bias)`` per layer, relu between, on ``cat([x, z])``, the same
weights: outputs agree to rounding) and, where it builds, ``zuko.nn.MaskedMLP`` with the same
adjacency and hidden widths (its own weights):

- **train**: forward + backward of the whole network (a squared-output loss), batch B;
- **sample**: cached generation of all K blocks (``generate``) against one dense MADE forward
  pass of the same batch (what one more sampling step costs a MADE user) and against K
  uncached full passes.

Medians of interleaved repeats after a warm-up (the first call also times the strip cuts);
peak memory is the extra resident memory of one call. Writes
``benchmarks/results/masked_<device>.{json,md}``.

    python benchmarks/bench_masked.py [--threads 1] [--quick] [--device cuda]

On CUDA (the Triton kernels) the grid is ``CUDA_GRID``: batches 4096 and 65536, K = 2, 8, 64.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from _common import machine_description, measure, write_results
from energyflow.nn import SemiAutoregressiveMLP

GRID = [(64, k, h, b) for h in (512, 1024) for b in (1024, 4096) for k in (2, 4, 8, 16, 32, 64)]
GRID += [(16, 4, 256, 1024), (16, 4, 256, 1), (64, 8, 512, 1)]  # a small network; one row
SAMPLE_GRID = [(64, k, 512, 10000) for k in (2, 4, 8, 16, 32, 64)]
QUICK_GRID = [(64, 8, 512, 1024), (64, 64, 512, 1024), (16, 4, 256, 1024)]
# On a GPU these networks are launch-bound at batch 1024: the CUDA grid goes to the batches where
# the skipped tiles are work (and stays short: a device lease is minutes, autotuning included).
CUDA_GRID = [
    (64, k, h, b) for h, b in ((512, 4096), (1024, 4096), (1024, 65536)) for k in (2, 8, 64)
]
CUDA_SAMPLE_GRID = [(64, k, 1024, b) for b in (10000, 65536) for k in (8, 16, 64)]


def made_of(net: SemiAutoregressiveMLP) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network as a MADE: dense weights times masks, inputs in their natural order (the
    first layer's columns permuted back), relu between the layers."""
    order = torch.argsort(net.input_order)
    layers = []
    for index, layer in enumerate(net.layers):
        weight, mask = layer.weight.detach().clone(), layer.mask.to(layer.weight.dtype)
        if index == 0:
            weight, mask = weight[:, order], mask[:, order]
        layers.append((weight.requires_grad_(), mask, layer.bias.detach().clone().requires_grad_()))

    def forward(h: torch.Tensor) -> torch.Tensor:
        for index, (weight, mask, bias) in enumerate(layers):
            h = F.linear(h, weight * mask, bias)
            if index < len(layers) - 1:
                h = F.relu(h)
        return h

    forward.parameters = [t for weight, _, bias in layers for t in (weight, bias)]  # type: ignore[attr-defined]
    return forward


def zuko_of(net: SemiAutoregressiveMLP) -> Optional[torch.nn.Module]:
    """zuko's MaskedMLP with the network's adjacency (outputs x inputs [x, z]) and widths."""
    try:
        import zuko
    except ImportError:
        return None
    d = net.features
    out_block = torch.repeat_interleave(torch.arange(net.blocks), torch.tensor(net.block_sizes))
    noise_block = torch.repeat_interleave(torch.arange(net.blocks), torch.tensor(net.noise_sizes))
    adjacency = torch.cat(
        [out_block[:, None] > out_block[None, :], out_block[:, None] >= noise_block[None, :]], 1
    )
    hidden = [layer.out_features for layer in net.layers[:-1]]
    try:
        return zuko.nn.MaskedMLP(adjacency[:, : d + net.noise_features], hidden)
    except Exception as error:  # zuko refuses some adjacencies; the row then says so
        print(f"zuko MaskedMLP not built: {error}")
        return None


def row(device: str, d: int, k: int, hidden: int, batch: int, repeats: int, train: bool) -> dict:
    torch.manual_seed(0)
    net = SemiAutoregressiveMLP(d, k, noise_features=d, hidden_features=(hidden, hidden))
    net = net.to(device)
    made = made_of(net)
    x, z = torch.randn(batch, d, device=device), torch.randn(batch, d, device=device)
    with torch.no_grad():
        error = (net(x, z) - made(torch.cat([x, z], -1))).abs().max().item()
    result = {"D": d, "K": k, "hidden": hidden, "batch": batch,
              "threads": torch.get_num_threads(), "max |ours - MADE|": error}  # fmt: skip
    if train:
        zuko_net = zuko_of(net)
        zuko_net = zuko_net.to(device) if zuko_net is not None else None

        # every network's gradients are cleared through a list of its parameters (as an
        # optimizer does), so that no row pays nn.Module.zero_grad's walk over the submodules
        ours_parameters = list(net.parameters())

        def ours() -> None:
            for t in ours_parameters:
                t.grad = None
            net(x, z).square().mean().backward()

        def dense() -> None:
            for t in made.parameters:
                t.grad = None
            made(torch.cat([x, z], -1)).square().mean().backward()

        calls = {"ours": ours, "MADE": dense}
        if zuko_net is not None:
            zuko_parameters = list(zuko_net.parameters())

            def zuko_call() -> None:
                for t in zuko_parameters:
                    t.grad = None
                zuko_net(torch.cat([x, z], -1)).square().mean().backward()

            calls["zuko"] = zuko_call
        ours()  # the first call times the strip cuts of each layer
        timed = measure(calls, device, repeats)
        result.update({f"train {name} s": t for name, (t, _) in timed.items()})
        result.update({f"train {name} peak MB": p / 2**20 for name, (_, p) in timed.items()})
        result["train speedup vs MADE"] = timed["MADE"][0] / timed["ours"][0]
        if "zuko" in timed:
            result["train speedup vs zuko"] = timed["zuko"][0] / timed["ours"][0]

    @torch.no_grad()
    def generate() -> None:
        net.generate(z)

    @torch.no_grad()
    def one_pass() -> None:
        made(torch.cat([x, z], -1))

    @torch.no_grad()
    def k_passes() -> None:
        h = torch.zeros(batch, d, device=device)
        offset = 0
        for size in net.block_sizes:
            h[:, offset : offset + size] = made(torch.cat([h, z], -1))[:, offset : offset + size]
            offset += size

    sample_calls = {"generate": generate, "one MADE pass": one_pass}
    if k <= 16:
        sample_calls["K MADE passes"] = k_passes
    timed = measure(sample_calls, device, repeats)
    result.update({f"sample {name} s": t for name, (t, _) in timed.items()})
    result["generate / one MADE pass"] = timed["generate"][0] / timed["one MADE pass"][0]
    if "K MADE passes" in timed:
        result["K MADE passes / generate"] = timed["K MADE passes"][0] / timed["generate"][0]
    print(json.dumps(result), flush=True)
    return result


def markdown(machine: dict, rows: list[dict]) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, device {machine['device']} "
        f"{machine.get('gpu', '')}, {machine['date']}",
        "",
        "SemiAutoregressiveMLP(D, K blocks, D noise, hidden (H, H)), backend auto, against the "
        "same network as a MADE (`F.linear(h, W * mask, b)` per layer, relu, on `cat([x, z])`; "
        "same weights) and zuko's `MaskedMLP` (same adjacency and widths). train = forward + "
        "backward of the whole network; speedup = their time / ours (same run, interleaved); "
        "sample = cached generation of all K blocks over one dense MADE pass of the same batch "
        "(lower is better), and K uncached MADE passes over it (K <= 16).",
        "",
        "| D | K | H | batch | threads | train speedup vs MADE | vs zuko | train ms ours / MADE "
        "| peak MB ours / MADE | generate / one MADE pass | K passes / generate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        train = "train ours s" in r
        cells = [
            r["D"],
            r["K"],
            r["hidden"],
            r["batch"],
            r["threads"],
            f"{r['train speedup vs MADE']:.2f}x" if train else "",
            f"{r['train speedup vs zuko']:.2f}x" if "train speedup vs zuko" in r else "",
            f"{1e3 * r['train ours s']:.1f} / {1e3 * r['train MADE s']:.1f}" if train else "",
            f"{r['train ours peak MB']:.0f} / {r['train MADE peak MB']:.0f}" if train else "",
            f"{r['generate / one MADE pass']:.2f}",
            f"{r['K MADE passes / generate']:.1f}x" if "K MADE passes / generate" in r else "",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="three rows, to try a change")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description(args.device)
    cuda = args.device == "cuda"
    grid = QUICK_GRID if args.quick else CUDA_GRID if cuda else GRID
    rows = [row(args.device, *shape, args.repeats, train=True) for shape in grid]
    if not args.quick:
        sample_grid = CUDA_SAMPLE_GRID if cuda else SAMPLE_GRID
        rows += [row(args.device, *shape, args.repeats, train=False) for shape in sample_grid]
    threads = f"_{args.threads}thread" if args.threads else ""
    stem = args.name or f"masked_{args.device}{threads}"
    write_results(stem, {"machine": machine, "rows": rows}, markdown(machine, rows))


if __name__ == "__main__":
    main()
