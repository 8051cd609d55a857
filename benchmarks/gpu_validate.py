"""On a CUDA device: compiled Triton kernels against the reference (values and gradients).

Pairwise power sums (fp64, fp32 ieee/tf32, bf16), the block-masked convolution (fp32 ieee/tf32,
bf16) and the block-masked linear layer (fp32, fp16, bf16; every activation). Prints one line
per case and exits non-zero if any relative error exceeds its tolerance. Used by
benchmarks/gpu_check.sh.

Each case runs every kernel with ONE of its autotune configurations, the next case the next one
(``pin_configs``): every tile shape gets checked on several problems, and each case compiles one
variant instead of autotuning all of them (minutes of compiles on a short device lease).
"""

from __future__ import annotations

import itertools
import sys
import time

import torch
from triton.runtime.autotuner import Autotuner

import energyflow as ef
import energyflow.kernels as kernels

TUNERS = {
    tuner: list(tuner.configs)
    for name, module in sys.modules.items()
    if name.startswith(kernels.__name__ + ".")
    for tuner in vars(module).values()
    if isinstance(tuner, Autotuner)
}
CASE_NUMBER = itertools.count()


def pin_configs() -> int:
    """Give every autotuned kernel the next of its configurations, alone (so none is timed);
    returns its number in ``kernels.tiling``'s list."""
    index = next(CASE_NUMBER)
    for tuner, configs in TUNERS.items():
        tuner.configs = [configs[index % len(configs)]]
    return index % len(next(iter(TUNERS.values())))


SHAPES = [
    (1, 1, 1),
    (2, 3, 3),
    (3, 17, 64),
    (17, 257, 300),
    (257, 2, 1),
    (257, 257, 3),
    (1000, 999, 16),
    (4099, 2053, 64),
]
BETAS = [0.3, 1.0, 1.5, 2.0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def case(n, m, d, beta, dtype, precision) -> float:
    torch.set_float32_matmul_precision("highest" if precision == "ieee" else "high")
    x = torch.randn(2, n, d, device="cuda", dtype=torch.float64)
    y = torch.randn(2, m, d, device="cuda", dtype=torch.float64) * 1.5 + 0.3
    b = torch.rand(2, m, device="cuda", dtype=torch.float64) + 0.1
    worst = 0.0
    xs, ys, bs = (t.to(dtype).requires_grad_() for t in (x, y, b))
    xr, yr, br = (t.detach().double().requires_grad_() for t in (xs, ys, bs))
    for be, (xx, yy, bb) in (("triton", (xs, ys, bs)), ("reference", (xr, yr, br))):
        value = ef.pairwise_power_sum(
            xx, yy, beta=beta, y_weights=bb, backend=be
        ) + ef.pairwise_power_sum(yy, beta=beta, x_weights=bb, backend=be)
        grads = torch.autograd.grad(
            value.float().sum() if be == "triton" else value.sum(), [xx, yy, bb]
        )
        if be == "triton":
            got = [value.detach(), *grads]
        else:
            want = [value.detach(), *grads]
    for g, w in zip(got, want):
        worst = max(worst, rel_err(g, w))
    return worst


def masked_case(dtype: torch.dtype, activation: str) -> float:
    """Triton BlockMaskedLinear vs the dense masked reference (fp64), values and gradients."""
    from energyflow.nn import BlockMaskedLinear

    levels_in = [level for level, size in enumerate([70, 300, 13, 129]) for _ in range(size)]
    levels_out = [level for level, size in enumerate([33, 200, 250, 29]) for _ in range(size)]
    layer = BlockMaskedLinear(levels_in, levels_out, strict=True, activation=activation).cuda()
    x = torch.randn(1000, len(levels_in), device="cuda")
    results = []
    for backend, dt in (("triton", dtype), ("reference", torch.float64)):
        layer_dt = layer.to(dt)
        layer_dt.backend = backend
        xx = x.to(dtype).to(dt).requires_grad_()  # both see the rounded input
        out = layer_dt(xx)
        grads = torch.autograd.grad(out.double().sum(), [xx, layer_dt.weight, layer_dt.bias])
        results.append([out.detach(), *grads])
    return max(rel_err(g, w) for g, w in zip(*results))


def conv_case(dtype: torch.dtype, stack: str, strict: bool) -> float:
    """Triton block-masked convolution vs the dense masked reference (fp64): values and the
    input, weight and bias gradients, on a 7 x 7 grid (MNIST's 4 x 4 blocks), 16 -> 128
    channels."""
    from energyflow.ops.masked_conv import block_masked_conv2d

    x = torch.randn(64, 16, 7, 7, device="cuda")
    weight = torch.randn(128, 16, 3, 3, device="cuda") / 6
    bias = torch.randn(128, device="cuda")
    results = []
    for backend, dt in (("triton", dtype), ("reference", torch.float64)):
        tensors = [t.to(dtype).to(dt).requires_grad_() for t in (x, weight, bias)]
        out = block_masked_conv2d(*tensors, stack=stack, strict=strict, backend=backend)
        grads = torch.autograd.grad(out.double().square().sum(), tensors)
        results.append([out.detach(), *grads])
    return max(rel_err(g, w) for g, w in zip(*results))


class Report:
    """Prints one line per case (with the pinned configuration's number) and counts failures."""

    def __init__(self) -> None:
        self.failures = 0
        self.start = time.perf_counter()

    def __call__(self, label: str, err: float, tol: float, config: int) -> None:
        bad = not err <= tol
        self.failures += bad
        print(f"{label} {err:9.2e}  config {config}{'  FAIL' if bad else ''}", flush=True)

    def section(self, name: str) -> None:
        print(f"-- {name} ({time.perf_counter() - self.start:.0f} s so far)", flush=True)


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_validate: no CUDA device")
        return 2
    tolerance = {
        (torch.float64, "ieee"): 1e-9,
        (torch.float32, "ieee"): 1e-4,
        (torch.float32, "tf32"): 2e-2,
        (torch.bfloat16, "ieee"): 3e-2,
    }
    report = Report()
    report.section("pairwise power sums")
    print(f"{'N':>5} {'M':>5} {'D':>4} {'beta':>4} {'dtype':>9} {'dot':>5} {'rel err':>9}")
    for (dtype, precision), tol in tolerance.items():
        for n, m, d in SHAPES:
            config = pin_configs()
            for beta in BETAS:
                err = case(n, m, d, beta, dtype, precision)
                label = f"{n:5d} {m:5d} {d:4d} {beta:4.1f} {str(dtype)[6:]:>9} {precision:>5}"
                report(label, err, tol, config)
    torch.set_float32_matmul_precision("highest")
    report.section("block-masked linear")
    masked_tolerance = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}
    for dtype, tol in masked_tolerance.items():
        for activation in ("none", "relu", "gelu", "silu", "tanh", "elu"):
            config = pin_configs()
            label = f"masked linear {str(dtype)[6:]:>9} {activation:>5}"
            report(label, masked_case(dtype, activation), tol, config)
    report.section("block-masked convolution")
    conv_cases = [
        (torch.float32, "highest", 1e-4),
        (torch.bfloat16, "highest", 5e-2),
        (torch.float32, "high", 2e-2),  # tf32 tiles
    ]
    for dtype, matmul_precision, tol in conv_cases:
        torch.set_float32_matmul_precision(matmul_precision)
        for stack in ("vertical", "horizontal"):
            for strict in (True, False):
                config = pin_configs()
                label = f"masked conv {str(dtype)[6:]:>9} {matmul_precision:>7} {stack:>10}"
                label += f" strict={strict!s:>5}"
                report(label, conv_case(dtype, stack, strict), tol, config)
    torch.set_float32_matmul_precision("highest")
    report.section("done")
    print(f"gpu_validate: {report.failures} failures")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
