"""Block-masked convolutions over image blocks: the whole network against the same network with
dense masked convolutions, and cached sampling against full passes.

    python bench_images.py [--device cuda] [--threads N] [--repeats R] [--name NAME]

Rows: 8 x 8 images in 2 x 2 blocks (a 4 x 4 grid; 64 channels, 3 layers: the digits recipe
before it became 128 channels, 4 layers) and 28 x 28 images in 4 x 4 blocks (a 7 x 7 grid,
MNIST-sized: 128 channels, 6 layers).

- train: forward + backward of ``SemiAutoregressiveConvNet`` (teacher-forced, as training runs
  it) against the same network written as a user writes a masked convolution,
  ``F.conv2d(x, W * mask, b, padding=r)`` per layer (same weights; outputs checked equal).
- sample: cached generation of all K blocks (``generate``) against one full pass of the same
  batch, and K full passes (the uncached generation: K times the one-pass time, the same work
  each pass).

Medians of interleaved repeats after a warm-up; peak memory is the extra resident (CPU) or
allocated (CUDA) memory of the first call. Results: results/images_<device>.md and .json.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import torch
import torch.nn.functional as F

from _common import machine_description, measure, write_results
from energyflow.nn import SemiAutoregressiveConvNet

# (image side, patch, channels C, hidden channels, layers, batch)
GRID = [(8, 2, 1, 64, 3, 1024), (8, 2, 1, 64, 3, 4096), (28, 4, 1, 128, 6, 256),
        (28, 4, 1, 128, 6, 1024)]  # fmt: skip


def dense_masked_of(net: SemiAutoregressiveConvNet) -> Callable:
    """The network as a user writes it: every masked convolution ``F.conv2d(x, W * mask, b,
    padding=r)`` on the full k x k kernel (same parameters)."""

    def conv(layer, x):
        return F.conv2d(
            x, layer.weight * layer.mask, layer.bias, padding=layer.weight.shape[-1] // 2
        )

    def forward(x, z):
        v = conv(net.vertical_in, torch.cat([x, z], 1))
        h = conv(net.horizontal_data, x) + conv(net.horizontal_noise, z) + net.links[0](F.relu(v))
        for layer in range(1, net.layers):
            v = v + conv(net.vertical[layer - 1], F.relu(v))
            h = h + conv(net.horizontal[layer - 1], F.relu(h)) + net.links[layer](F.relu(v))
        return net.output(F.relu(h))

    return forward


def row(device: str, side: int, patch: int, channels: int, hidden: int, layers: int, batch: int,
        repeats: int) -> dict:  # fmt: skip
    torch.manual_seed(0)
    grid, block = side // patch, channels * patch * patch
    net = SemiAutoregressiveConvNet(block, 2 * block, hidden_channels=hidden, layers=layers)
    net = net.to(device)
    dense = dense_masked_of(net)
    x = torch.rand(batch, block, grid, grid, device=device)
    z = torch.randn(batch, 2 * block, grid, grid, device=device)
    with torch.no_grad():
        error = (net(x, z) - dense(x, z)).abs().max().item()
    result = {"image": f"{channels}x{side}x{side}", "patch": patch, "grid": f"{grid}x{grid}",
              "hidden": hidden, "layers": layers, "batch": batch,
              "threads": torch.get_num_threads(), "max |ours - dense|": error}  # fmt: skip

    def ours() -> None:
        net.zero_grad(set_to_none=True)
        net(x, z).square().mean().backward()

    def dense_call() -> None:
        net.zero_grad(set_to_none=True)
        dense(x, z).square().mean().backward()

    timed = measure({"ours": ours, "dense masked": dense_call}, device, repeats)
    result.update({f"train {name} s": t for name, (t, _) in timed.items()})
    result.update({f"train {name} peak MB": p / 2**20 for name, (_, p) in timed.items()})
    result["train speedup"] = timed["dense masked"][0] / timed["ours"][0]

    @torch.no_grad()
    def generate() -> None:
        net.generate(z)

    @torch.no_grad()
    def one_pass() -> None:
        net(x, z)

    timed = measure({"generate": generate, "one full pass": one_pass}, device, repeats)
    result.update({f"sample {name} s": t for name, (t, _) in timed.items()})
    result["generate / one pass"] = timed["generate"][0] / timed["one full pass"][0]
    result["K passes / generate"] = grid * grid * timed["one full pass"][0] / timed["generate"][0]
    print(json.dumps(result), flush=True)
    return result


def markdown(machine: dict, rows: list[dict]) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, device {machine['device']} "
        f"{machine.get('gpu', '')}, {machine['date']}",
        "",
        "SemiAutoregressiveConvNet on the block grid (noise 2 C p^2 channels per block, kernel 3) "
        "against the same network with dense masked convolutions (`F.conv2d(x, W * mask, b, "
        "padding=1)`, same weights). train = forward + backward; speedup = dense / ours (same "
        "run, interleaved). sample: cached generation of all K blocks over one full pass of the "
        "same batch (lower is better), and K full passes over it (the uncached generation).",
        "",
        "| image | patch | grid | hidden x layers | batch | threads | train speedup | train ms "
        "ours / dense | peak MB ours / dense | generate / one pass | K passes / generate |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            r["image"], r["patch"], r["grid"], f"{r['hidden']} x {r['layers']}", r["batch"],
            r["threads"], f"{r['train speedup']:.2f}x",
            f"{1e3 * r['train ours s']:.1f} / {1e3 * r['train dense masked s']:.1f}",
            f"{r['train ours peak MB']:.0f} / {r['train dense masked peak MB']:.0f}",
            f"{r['generate / one pass']:.2f}", f"{r['K passes / generate']:.1f}x",
        ]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description(args.device)
    rows = [row(args.device, *shape, args.repeats) for shape in GRID]
    threads = f"_{args.threads}thread" if args.threads else ""
    stem = args.name or f"images_{args.device}{threads}"
    write_results(stem, {"machine": machine, "rows": rows}, markdown(machine, rows))


if __name__ == "__main__":
    main()
