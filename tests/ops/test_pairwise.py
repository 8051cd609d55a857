"""Every fused path (C++ exact differences, C++ GEMM tiles, Triton) against the pure-PyTorch
reference: values and gradients; and the rule that picks the C++ path."""

from __future__ import annotations

import pytest
import torch

import energyflow as ef
from helpers import FUSED_BACKENDS, KERNEL_PATHS, assert_close_scaled

BETAS = [0.3, 0.5, 1.0, 1.5, 2.0]
# (N, M, D): every size of the spec (N or M in 1, 2, 3, 17, 257; D in 1, 3, 15, 16, 17, 64, 300)
# appears, with tile-straddling, non-power-of-two combinations: 16-column padding, 64-row GEMM
# tasks and 256-column chunks (255, 256, 257, 513).
SHAPES_CPP = [
    (1, 1, 1),
    (2, 3, 3),
    (3, 17, 64),
    (17, 257, 300),
    (257, 2, 1),
    (257, 257, 3),
    (1, 257, 64),
    (17, 1, 300),
    (65, 255, 15),
    (64, 256, 16),
    (63, 513, 17),
]
# The interpreter runs each program on NumPy: smaller sets, same odd sizes.
SHAPES_TRITON = [(1, 1, 1), (2, 3, 3), (3, 17, 64), (17, 2, 300), (20, 17, 1), (1, 33, 64)]
RTOL = {torch.float64: 1e-10, torch.float32: 2e-4}


def _shapes(backend):
    return SHAPES_CPP if backend == "cpp" else SHAPES_TRITON


def _inputs(n, m, d, dtype, batch, weighted):
    lead = (batch,) if batch else ()
    x = torch.randn(*lead, n, d, dtype=dtype)
    y = torch.randn(*lead, m, d, dtype=dtype) * 1.5 + 0.3
    a = torch.rand(*lead, n, dtype=dtype) + 0.1 if weighted else None
    b = torch.rand(*lead, m, dtype=dtype) + 0.1 if weighted else None
    leaves = [t.requires_grad_() for t in (x, y, a, b) if t is not None]
    return x, y, a, b, leaves


def _value_and_grads(backend, x, y, a, b, leaves, beta):
    cross = ef.pairwise_power_sum(x, y, beta=beta, x_weights=a, y_weights=b, backend=backend)
    own = ef.pairwise_power_sum(y, beta=beta, x_weights=b, backend=backend)
    seed = torch.linspace(0.5, 1.5, cross.numel(), dtype=cross.dtype).reshape(cross.shape)
    grads = torch.autograd.grad((seed * (cross + 0.7 * own)).sum(), leaves)
    return [cross.detach(), own.detach(), *grads]


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(path, use_path, dtype, weighted):
    """Each shape with one beta, the betas in turn (every beta, so every power form, meets
    every path, dtype and weighting on more than one shape)."""
    backend = use_path(path)
    for index, (n, m, d) in enumerate(_shapes(backend)):
        beta = BETAS[(index + 2 * weighted) % len(BETAS)]
        batch = 2 if index % 2 else None
        x, y, a, b, leaves = _inputs(n, m, d, dtype, batch, weighted)
        got = _value_and_grads(backend, x, y, a, b, leaves, beta)
        want = _value_and_grads("reference", x, y, a, b, leaves, beta)
        names = ["cross", "self", "grad x", "grad y", "grad a", "grad b"]
        for name, g, w in zip(names, got, want):
            # self sums of one point are exactly 0 and their gradients too
            assert_close_scaled(g, w, RTOL[dtype], f"{backend} {name} N={n} M={m} D={d}")


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_large_offset_translation_invariance(path, use_path):
    """fp32 points at offset 1e4 agree with fp64 on the same (fp32-rounded) points to 1e-4."""
    backend = use_path(path)
    x = (torch.randn(40, 3) + 1e4).float()
    y = (torch.randn(37, 3) * 2 + 1e4).float()
    for beta in (0.5, 1.0):
        got = ef.energy_distance(x, y, beta=beta, backend=backend)
        want = ef.energy_distance(x.double(), y.double(), beta=beta, backend="reference")
        assert torch.isfinite(got)
        assert abs(got.double() - want) <= 1e-4 * abs(want), (beta, got, want)


@pytest.mark.parametrize("path", KERNEL_PATHS + ["reference"])
@pytest.mark.parametrize("beta", [0.3, 1.0, 2.0])
def test_exact_duplicates_have_finite_subgradient_zero(path, use_path, beta):
    backend = use_path(path)
    base = torch.randn(6, 3, dtype=torch.float64)
    x = torch.cat([base, base[:2]]).requires_grad_()  # duplicates within x
    y = torch.cat(
        [base[2:5], torch.randn(4, 3, dtype=torch.float64)]
    ).requires_grad_()  # and across

    def loss(be):
        return ef.pairwise_power_sum(x, y, beta=beta, backend=be) + ef.pairwise_power_sum(
            x, beta=beta, backend=be
        )

    got = torch.autograd.grad(loss(backend), [x, y])
    # subgradient-0 reference computed by hand: sum of beta r^(beta-2) (x_i - y_j) over r > 0 only
    diff_xy = x[:, None] - y[None]
    diff_xx = x[:, None] - x[None]

    def weight(diff):
        r = diff.norm(dim=-1)
        return torch.where(r > 0, beta * r.clamp_min(1e-300) ** (beta - 2), torch.zeros_like(r))

    want_x = (weight(diff_xy)[..., None] * diff_xy).sum(1) + 2 * (
        weight(diff_xx)[..., None] * diff_xx
    ).sum(1)
    want_y = -(weight(diff_xy)[..., None] * diff_xy).sum(0)
    for g, w in zip(got, (want_x, want_y)):
        assert_close_scaled(g, w.detach(), 1e-9, backend)


@pytest.mark.parametrize("path", KERNEL_PATHS + ["reference"])
def test_gradcheck_fp64(path, use_path):
    backend = use_path(path)
    # The interpreter is slow: one small unbatched case for triton, batched ones elsewhere.
    lead, (n, m, d), betas = (
        ((), (3, 2, 2), (0.7,)) if backend == "triton" else ((2,), (9, 7, 3), (0.5, 1.0, 1.7))
    )
    x = torch.randn(*lead, n, d, dtype=torch.float64, requires_grad=True)
    y = torch.randn(*lead, m, d, dtype=torch.float64, requires_grad=True)
    a = (torch.rand(*lead, n, dtype=torch.float64) + 0.5).requires_grad_()
    b = (torch.rand(*lead, m, dtype=torch.float64) + 0.5).requires_grad_()
    for beta in betas:
        assert torch.autograd.gradcheck(
            lambda x, y, a, b: ef.pairwise_power_sum(
                x, y, beta=beta, x_weights=a, y_weights=b, backend=backend
            ),
            (x, y, a, b),
        )
        assert torch.autograd.gradcheck(
            lambda y, b: ef.pairwise_power_sum(y, beta=beta, x_weights=b, backend=backend), (y, b)
        )


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(path, use_path, dtype):
    backend = use_path(path)
    x = torch.randn(2, 17, 3).to(dtype).requires_grad_()
    y = torch.randn(2, 9, 3).to(dtype).requires_grad_()
    got = ef.pairwise_power_sum(x, y, backend=backend)
    assert got.dtype == dtype
    gx, gy = torch.autograd.grad(got.float().sum(), [x, y])
    assert gx.dtype == dtype
    xf, yf = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
    want = ef.pairwise_power_sum(xf, yf, backend="reference")
    wx, wy = torch.autograd.grad(want.sum(), [xf, yf])
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert_close_scaled(got, want, tol, "value")
    assert_close_scaled(gx, wx, tol * 4, "grad x")
    assert_close_scaled(gy, wy, tol * 4, "grad y")


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")
def test_triton_tf32_tolerance_path():
    """torch's 'high' fp32 matmul precision selects tf32 tiles: results hold to tf32 tolerance.

    (The interpreter computes tl.dot in full fp32; on a GPU the same bound is checked by
    benchmarks/gpu_check.sh.)
    """
    x = torch.randn(2, 23, 5, requires_grad=True)
    y = torch.randn(2, 19, 5, requires_grad=True)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        got = ef.energy_distance(x, y, backend="triton")
        got_grads = torch.autograd.grad(got.sum(), [x, y])
    finally:
        torch.set_float32_matmul_precision(previous)
    want = ef.energy_distance(x.double(), y.double(), backend="reference")
    want_grads = torch.autograd.grad(want.sum(), [x, y])
    assert_close_scaled(got, want, 5e-3, "value")
    for g, w in zip(got_grads, want_grads):
        assert_close_scaled(g, w, 2e-2, "grad")


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_deterministic(path, use_path):
    backend = use_path(path)
    n, m = (20, 17) if backend == "triton" else (70, 50)
    x = torch.randn(3, n, 12, requires_grad=True)
    y = torch.randn(3, m, 12, requires_grad=True)
    runs = []
    for _ in range(2):
        value = ef.energy_distance(x, y, backend=backend)
        runs.append([value, *torch.autograd.grad(value.sum(), [x, y])])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="C++ extension not built")
def test_cpp_thread_counts_agree_within_rounding():
    """Bitwise equal for a thread count (test_deterministic); across thread counts the two-sided
    passes sum their per-thread column totals in a different grouping: equal within rounding."""
    x = torch.randn(2, 300, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 200, 5, dtype=torch.float64, requires_grad=True)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            value = ef.energy_distance(x, y, backend="cpp")
            runs.append([value, *torch.autograd.grad(value.sum(), [x, y])])
    finally:
        torch.set_num_threads(threads)
    for one, three in zip(*runs):
        assert_close_scaled(one, three, 1e-12, "1 vs 3 threads")


def test_cpp_path_rule_picks_each_method(monkeypatch):
    """Up to DIRECT_DISTANCE_MAX_DIM features the C++ kernel runs exact differences, above it
    GEMM tiles: each path actually runs, and both agree with the reference."""
    from energyflow.ops import dispatch

    if "cpp-exact" not in KERNEL_PATHS:
        pytest.skip("the C++ extension is not built")
    real = dispatch.cpp_module()
    methods = []

    class Spy:  # row_stats, cross_stats and self_stats all take the method last
        def __getattr__(self, name):
            def call(*args):
                methods.append(args[-1])
                return getattr(real, name)(*args)

            return call

    monkeypatch.setattr(dispatch, "cpp_module", lambda: Spy())
    limit = dispatch.DIRECT_DISTANCE_MAX_DIM
    for dim, method in ((1, "exact"), (limit, "exact"), (limit + 1, "gemm"), (64, "gemm")):
        methods.clear()
        x = torch.randn(30, dim, dtype=torch.float64, requires_grad=True)
        y = torch.randn(20, dim, dtype=torch.float64)
        got = ef.energy_distance(x, y, backend="cpp")
        (grad,) = torch.autograd.grad(got, x)
        assert set(methods) == {method}, (dim, methods)
        want = ef.energy_distance(x, y, backend="reference")
        (want_grad,) = torch.autograd.grad(want, x)
        assert_close_scaled(got, want, 1e-10, f"value D={dim}")
        assert_close_scaled(grad, want_grad, 1e-10, f"grad D={dim}")


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_self_sums_without_gradients(path, use_path, dtype):
    """A self sum nobody differentiates visits only the pairs j > i on the C++ paths (rows and
    column chunks straddling the diagonal): same value as the reference."""
    backend = use_path(path)
    sizes = [(1, 3), (17, 5), (300, 17), (600, 64)] if backend == "cpp" else [(1, 3), (37, 5)]
    for n, d in sizes:
        x = torch.randn(2, n, d, dtype=dtype)
        x[:, n // 2] = x[:, 0]  # a duplicate pair
        b = torch.rand(2, n, dtype=dtype) + 0.1
        for beta in (0.5, 1.0, 1.7):
            with torch.no_grad():
                got = ef.pairwise_power_sum(x, beta=beta, x_weights=b, backend=backend)
            want = ef.pairwise_power_sum(x, beta=beta, x_weights=b, backend="reference")
            assert_close_scaled(got, want, RTOL[dtype], f"{path} N={n} D={d} beta={beta}")


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("beta", [0.01, 0.3, 0.7, 1.5, 1.99])
def test_cpp_fp32_general_power_over_the_float_range(beta):
    """The fp32 general power by tables (csrc/row_stats_powers.h): each term b r^beta and its
    gradient weight b r^(beta - 2) within 4.5e-7 relative of fp64 for r from 2^-60 to 2^61 (the
    roundings of the table entries and their products; the error does not grow with |log r|)."""
    from energyflow.ops import pairwise

    exponents = torch.arange(-60.0, 61.0, 0.037, dtype=torch.float64)
    r = (torch.exp2(exponents) * (1 + torch.rand(exponents.shape, dtype=torch.float64))).float()
    x = torch.zeros(len(r), 1, 1)
    rowsum, wdiff = pairwise.row_stats(
        x, r.reshape(-1, 1, 1), torch.ones(len(r), 1), beta, False, True, "cpp"
    )
    r = r.double()
    exact = r**beta
    assert torch.isfinite(rowsum).all() and torch.isfinite(wdiff).all()
    assert (rowsum.double().flatten() / exact - 1).abs().max() <= 4.5e-7
    # wdiff = b r^(beta - 2) (0 - r) = -r^(beta - 1)
    assert (-wdiff.double().flatten() / (exact / r) - 1).abs().max() <= 4.5e-7


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [0.7, 1.0, 2.0])
def test_cpp_two_sided_cross_pass_equals_two_row_passes(monkeypatch, dtype, beta):
    """When both sets need gradients the C++ paths form both sides of the cross sum in one pass
    (GEMM: W Y for the rows, W^T X for the columns; exact: each pair's terms added to its row and
    its column; per-thread column totals); it agrees with two row passes (the fallback above
    TWO_SIDED_MAX_BYTES) and with the reference, duplicates across the sets (the close pairs
    recomputed exactly) and a large common offset included."""
    from energyflow.ops import pairwise

    calls = []
    real = pairwise._cpp_cross_stats
    monkeypatch.setattr(pairwise, "_cpp_cross_stats", lambda *args: calls.append(1) or real(*args))
    shapes = [(None, 257, 300, 17), (2, 65, 3, 64), (None, 1, 70, 8), (None, 257, 300, 3)]
    for batch, n, m, d in shapes + [(2, 70, 17, 1), (None, 3, 1, 2)]:
        lead = () if batch is None else (batch,)
        x = torch.randn(*lead, n, d, dtype=dtype) + 1e3
        y = torch.randn(*lead, m, d, dtype=dtype) * 1.5 + 1e3
        if n > 3:
            y[..., :3, :] = x[..., :3, :]  # duplicates across the sets
        a = torch.rand(*lead, n, dtype=dtype) + 0.1
        b = torch.rand(*lead, m, dtype=dtype) + 0.1
        leaves = [t.requires_grad_() for t in (x, y, a, b)]

        def run(backend, limit=pairwise.TWO_SIDED_MAX_BYTES):
            monkeypatch.setattr(pairwise, "TWO_SIDED_MAX_BYTES", limit)
            value = ef.pairwise_power_sum(
                x, y, beta=beta, x_weights=a, y_weights=b, backend=backend
            )
            return [value, *torch.autograd.grad(value.sum(), leaves)]

        before = len(calls)
        one_pass = run("cpp")
        assert len(calls) == before + 1  # the two-sided pass ran
        two_passes = run("cpp", limit=0)
        assert len(calls) == before + 1  # and the fallback did not
        want = run("reference")
        for name, g, h, w in zip(["value", "x", "y", "a", "b"], one_pass, two_passes, want):
            assert_close_scaled(g, w, RTOL[dtype], f"two-sided {name} N={n} M={m} D={d}")
            assert_close_scaled(h, w, RTOL[dtype], f"two passes {name} N={n} M={m} D={d}")


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [0.7, 1.0, 2.0])
def test_cpp_self_sum_with_gradients_takes_each_pair_once(monkeypatch, dtype, beta):
    """A C++ self sum with gradients visits the pairs j > i once (self_stats: each pair's terms
    added to its row and its column, row blocks straddling the diagonal's chunks, both methods);
    it agrees with the row pass over every ordered pair (the fallback above TWO_SIDED_MAX_BYTES)
    and with the reference, duplicates and a large offset included. (Below
    SELF_ONE_PASS_MIN_ROWS rows the row pass runs: lowered here to test small sets.)"""
    from energyflow.ops import pairwise

    calls = []
    real = pairwise._cpp_self_stats
    monkeypatch.setattr(pairwise, "_cpp_self_stats", lambda *args: calls.append(1) or real(*args))
    x = torch.randn(pairwise.SELF_ONE_PASS_MIN_ROWS - 1, 2, requires_grad=True)
    torch.autograd.grad(ef.pairwise_power_sum(x, backend="cpp"), x)
    assert not calls  # the rule: too few rows for the pass over j > i
    monkeypatch.setattr(pairwise, "SELF_ONE_PASS_MIN_ROWS", 1)
    for batch, n, d in ((None, 2, 1), (2, 17, 3), (None, 300, 5), (None, 600, 17), (2, 65, 64)):
        lead = () if batch is None else (batch,)
        x = torch.randn(*lead, n, d, dtype=dtype) * 2.0 + 1e3
        x[..., n // 2, :] = x[..., 0, :]  # a duplicate pair
        b = torch.rand(*lead, n, dtype=dtype) + 0.1
        leaves = [t.requires_grad_() for t in (x, b)]

        def run(backend, limit=pairwise.TWO_SIDED_MAX_BYTES):
            monkeypatch.setattr(pairwise, "TWO_SIDED_MAX_BYTES", limit)
            value = ef.pairwise_power_sum(x, beta=beta, x_weights=b, backend=backend)
            return [value, *torch.autograd.grad(value.sum(), leaves)]

        before = len(calls)
        once = run("cpp")
        assert len(calls) == before + 1  # the pass over j > i ran
        every_pair = run("cpp", limit=0)
        assert len(calls) == before + 1  # and the fallback did not
        want = run("reference")
        for name, g, h, w in zip(["value", "x", "b"], once, every_pair, want):
            assert_close_scaled(g, w, RTOL[dtype], f"j > i {name} N={n} D={d}")
            assert_close_scaled(h, w, RTOL[dtype], f"every pair {name} N={n} D={d}")


_GENERIC_VARIANT_CHECK = """
import torch, energyflow as ef
from energyflow.ops import dispatch
assert dispatch.cpp_module().kernel_variant() == "generic"
torch.manual_seed(5)
worst = 0.0
for d in (2, 16):  # the exact and the GEMM method
    for dtype in (torch.float64, torch.float32):
        for beta in (0.7, 1.0):
            x = torch.randn(70, d, dtype=dtype, requires_grad=True)
            y = (torch.randn(45, d, dtype=dtype) + 0.5).requires_grad_()
            x.data[3] = y.data[4]  # a duplicate across the sets
            out = {}
            for backend in ("cpp", "reference"):
                value = ef.energy_distance(x, y, beta=beta, backend=backend)
                out[backend] = (value, *torch.autograd.grad(value, (x, y)))
            for got, want in zip(out["cpp"], out["reference"]):
                assert torch.isfinite(got).all()
                err = ((got - want).abs().max() / want.abs().max()).item()
                worst = max(worst, err / (1e-10 if dtype == torch.float64 else 2e-4))
print("worst", worst)
assert worst <= 1.0
"""


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="C++ extension not built")
def test_cpp_generic_variant_matches_reference():
    """The portable build of the C++ kernels (the AVX2 one runs wherever the CPU has it):
    ENERGYFLOW_CPU_KERNEL=generic selects it; both methods, fp64 / fp32, the general power and
    the square root, gradients on both sides, against the reference."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ENERGYFLOW_CPU_KERNEL="generic")
    done = subprocess.run(
        [sys.executable, "-c", _GENERIC_VARIANT_CHECK], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
