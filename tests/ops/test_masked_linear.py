"""Block-masked linear ops: every fused path against the reference, gradients, half inputs,
level slices, activation derivatives and torch.compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from energyflow.nn import BlockMaskedLinear
from energyflow.ops.masked_linear import ACTIVATIONS, activation_derivative
from helpers import FUSED_BACKENDS, assert_close_scaled, levels

PATHS = (
    ["blocked"]
    + (["rows"] if "cpp" in FUSED_BACKENDS else [])
    + (["triton"] if "triton" in FUSED_BACKENDS else [])
)
ACTS = [None, "relu", "gelu", "silu", "tanh", "elu"]


@pytest.fixture
def use_path(monkeypatch):
    """Set a layer's backend; "rows" (the C++ row kernel, an internal choice of "auto" on the
    CPU) is reached through "auto" with its timing replaced by that choice."""
    from energyflow.ops import masked_linear

    timed = masked_linear._auto_backend

    def use(layer, path):
        chosen = (lambda *args: "rows") if path == "rows" else timed
        monkeypatch.setattr(masked_linear, "_auto_backend", chosen)
        layer.backend = "auto" if path == "rows" else path
        return layer

    return use


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "in_sizes, out_sizes",
    [
        ([3, 17, 1, 20], [5, 2, 19, 11]),  # uneven levels, tiles straddling the 16-wide tiles
        ([2, 3], [4, 5]),  # strict: one rectangle that covers only the level-1 rows
        ([5], [7]),  # one level: a plain linear map when not strict, all masked when strict
    ],
)
def test_layer_paths_match_reference(backend, activation, dtype, in_sizes, out_sizes, use_path):
    in_levels, out_levels = levels(in_sizes), levels(out_sizes)
    for strict in (True, False):
        layer = BlockMaskedLinear(in_levels, out_levels, strict=strict, activation=activation).to(
            dtype
        )
        with torch.no_grad():  # garbage in the masked entries must not leak into any path
            layer.weight += 3.0 * (1 - layer.plan.mask(dtype))
        x = torch.randn(2, 19, len(in_levels), dtype=dtype, requires_grad=True)
        seed = torch.randn(2, 19, len(out_levels), dtype=dtype)
        results = {}
        for path in ("reference", backend):
            out = use_path(layer, path)(x)
            grads = torch.autograd.grad((out * seed).sum(), [x, layer.weight, layer.bias])
            results[path] = [out, *grads]
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        for name, got, want in zip(
            ["out", "x", "weight", "bias"], results[backend], results["reference"]
        ):
            assert_close_scaled(got.detach(), want.detach(), rtol, f"{backend} {name}")
        masked = layer.plan.mask() == 0
        assert (results[backend][2][masked] == 0).all(), "masked weights got gradient"


@pytest.mark.parametrize("backend", ["reference"] + PATHS)
@pytest.mark.parametrize("activation", ["tanh", "gelu", "silu", "elu", None])
def test_layer_gradcheck(backend, activation, use_path):
    layer = BlockMaskedLinear(
        levels([2, 3, 2]), levels([1, 3, 2, 2]), strict=True, activation=activation
    ).double()
    use_path(layer, backend)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: _functional(layer, x, w, b), (x, layer.weight, layer.bias)
    )


@pytest.mark.skipif("cpp" not in FUSED_BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_row_kernel_matches_the_reference_with_second_derivatives(rows, use_path):
    """The row kernel (what "auto" picks at a few batch rows where it times fastest) at odd batch
    sizes: values and both gradients against the dense masked product in fp64 and fp32, and
    gradgradcheck (its derivatives are the row kernels again)."""
    torch.manual_seed(rows)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        layer = BlockMaskedLinear(
            levels([3, 0, 17, 1, 20]), levels([5, 2, 19, 1, 11]), strict=True, activation="gelu"
        ).to(dtype)
        with torch.no_grad():
            layer.weight += 3.0 * (1 - layer.plan.mask(dtype))  # garbage in the masked entries
        x = (torch.randn(rows, layer.in_features, dtype=dtype) + 100.0).requires_grad_()
        seed = torch.randn(rows, layer.out_features, dtype=dtype)
        results = {}
        for path in ("reference", "rows"):
            out = use_path(layer, path)(x)
            grads = torch.autograd.grad((out * seed).sum(), [x, layer.weight, layer.bias])
            results[path] = [out.detach(), *grads]
            if path == "rows":
                assert "MaskedLinear" in type(out.grad_fn).__name__
        for name, got, want in zip(["out", "x", "weight", "bias"], results["rows"],
                                   results["reference"]):  # fmt: skip
            assert_close_scaled(got, want, rtol, f"{dtype} {name}")
    layer = use_path(BlockMaskedLinear(levels([2, 3, 2]), levels([1, 3, 2, 2]), strict=True,
                                       activation="tanh").double(), "rows")  # fmt: skip
    x = torch.randn(rows, 7, dtype=torch.float64, requires_grad=True)
    weight = (layer.weight.detach() * layer.mask).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda x, w: _functional(layer, x, w, layer.bias), (x, weight)
    )


def test_row_kernel_refuses_what_it_cannot_run():
    from energyflow.ops import dispatch

    if not dispatch.cpp_available():
        pytest.skip("the C++ extension is not built")
    cpp = dispatch.cpp_module()
    x, weight, bias = torch.ones(2, 4), torch.ones(3, 4), torch.ones(3)
    with pytest.raises(RuntimeError, match="the groups cover 2 of the 3 output rows"):
        cpp.masked_rows_forward(x, weight, bias, [0, 2, 4])
    with pytest.raises(RuntimeError, match="does not continue the groups in order"):
        cpp.masked_rows_forward(x, weight, bias, [0, 2, 4, 2, 3, 1])
    with pytest.raises(RuntimeError, match="float32 or float64 tensors of one dtype"):
        cpp.masked_rows_grad_input(torch.ones(2, 3, dtype=torch.float64), weight, [0, 3, 4])
    with pytest.raises(RuntimeError, match=r"bias must be empty or \(3,\)"):
        cpp.masked_rows_forward(x, weight, torch.ones(2), [0, 3, 4])
    out = cpp.masked_rows_forward(x, weight, bias, [0, 1, 1, 1, 3, 4])  # row 0 reads 1 input
    assert out.tolist() == [[2.0, 5.0, 5.0]] * 2


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    z = torch.linspace(-4, 4, 101, dtype=torch.float64).requires_grad_()
    (want,) = torch.autograd.grad(ACTIVATIONS[name](z).sum(), z)
    assert_close_scaled(activation_derivative(name, z.detach()), want, 1e-12, name)


def test_masked_layer_compiles_fullgraph():
    """The fused masked path is a custom op with a fake kernel, like the pairwise ops."""
    layer = BlockMaskedLinear(levels([3, 4]), levels([2, 5]), strict=False, activation="silu")
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 7, requires_grad=True)
    got = compiled(x)
    (got_grad,) = torch.autograd.grad(got.sum(), x)
    want = layer(x)
    (want_grad,) = torch.autograd.grad(want.sum(), x)
    assert_close_scaled(got, want, 1e-6, "value")
    assert_close_scaled(got_grad, want_grad, 1e-6, "grad")


def _functional(layer, x, w, b):
    return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")
@pytest.mark.parametrize("dtype", [torch.float16])
def test_triton_layer_half_inputs_accumulate_in_fp32(dtype):
    """fp16 only on the CPU: the Triton interpreter's bf16 tl.dot is wrong (a 16 x 16 bf16
    product came out 2.7e10 off with triton 3.9), so bf16 is checked by gpu_check.sh instead."""
    layer = BlockMaskedLinear(
        levels([5, 12]), levels([3, 9, 6]), strict=True, activation="gelu", backend="triton"
    )
    x = torch.randn(21, 17)
    ref_out = layer(x.to(dtype).float())  # triton on fp32 copies of the rounded inputs
    half = layer.to(dtype)
    xh = x.to(dtype).requires_grad_()
    out = half(xh)
    assert out.dtype == dtype
    assert_close_scaled(out.float(), ref_out.detach(), 2e-2, "half forward")
    (grad,) = torch.autograd.grad(out.float().sum(), xh)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")
def test_triton_level_slice_launch():
    layer = BlockMaskedLinear(
        levels([4, 4, 4]), levels([5, 6, 7]), strict=False, activation="silu", backend="triton"
    ).double()
    x = torch.randn(9, 12, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)
        for level in range(3):
            start, end = layer.plan.level_rows(level)
            sliced = layer.forward_level(x[:, : int(layer.plan.prefix[end - 1])], level)
            assert_close_scaled(sliced, full[:, start:end], 1e-12, f"level {level}")


def _values_and_grads(layer, x, seed):
    out = layer(x)
    grads = torch.autograd.grad((out * seed).sum(), [x, layer.weight, layer.bias])
    return [out.detach(), *grads]


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("count", ["1", "2", "3", "1000"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_strip_count_matches_the_reference(monkeypatch, count, dtype, grouped):
    """ENERGYFLOW_MASKED_STRIPS fixes the cut: one strip (dense) to one per group, on uneven
    levels (a level without inputs, inputs nobody reads) with garbage in the masked entries;
    each pass's strips run in turn or grouped (the C++ extension's side-by-side GEMMs)."""
    from energyflow.ops import dispatch, masked_strips

    if grouped and not dispatch.cpp_available():
        pytest.skip("the C++ extension is not built")
    monkeypatch.setenv("ENERGYFLOW_MASKED_STRIPS", count)
    fixed_cuts = masked_strips.cuts
    monkeypatch.setattr(
        masked_strips,
        "cuts",
        lambda *args: dataclasses.replace(fixed_cuts(*args), grouped=(grouped,) * 3),
    )
    for strict in (True, False):
        layer = BlockMaskedLinear(
            levels([3, 0, 17, 1, 20, 2]), levels([5, 2, 19, 1, 11, 4]), strict=strict,
            activation="relu", backend="blocked",
        ).to(dtype)  # fmt: skip
        with torch.no_grad():
            layer.weight += 3.0 * (1 - layer.mask)
        x = torch.randn(257, layer.in_features, dtype=dtype, requires_grad=True)
        seed = torch.randn(257, layer.out_features, dtype=dtype)
        got = _values_and_grads(layer, x, seed)
        layer.backend = "reference"
        want = _values_and_grads(layer, x, seed)
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        for name, g, w in zip(["out", "x", "weight", "bias"], got, want):
            assert_close_scaled(g, w, rtol, f"{count} strips {name}")
        assert (got[2][layer.mask == 0] == 0).all(), "masked weights got gradient"


def test_strip_cuts_are_timed_once_per_shape_and_batch_bucket():
    from energyflow.ops import masked_strips

    layer = BlockMaskedLinear(levels([16] * 8), levels([16] * 8), strict=False, activation="relu")
    groups = layer.plan.flat_groups
    x = torch.randn(300, 128)  # bucket 512: 512 x 128 x 128 multiply-adds, above TIMED_MIN_WORK
    first = masked_strips.cuts(groups, 128, 300, x)
    assert masked_strips.cuts(groups, 128, 400, x) is first  # the same bucket: no new timing
    for strips in (first.forward, first.grad_weight):  # rows in order, all of them
        assert [row for s, e, _ in strips for row in range(s, e)] == list(range(128))
    small = masked_strips.cuts(groups, 128, 4, x)  # too little work to time: one dense strip
    assert small.forward == ((0, 128, 128),) and small.dense(with_gradients=True)
    out = layer(x)
    assert_close_scaled(out, torch.relu(x @ (layer.weight * layer.mask).t() + layer.bias), 1e-5)


def test_auto_runs_the_path_that_timed_fastest_on_the_whole_layer(monkeypatch):
    """auto times the dense masked product, the strips and (at a few rows) the row kernel on the
    whole layer, once per shape: the dense one runs as the reference's autograd graph, the
    others as the fused op; all give the same values."""
    from energyflow.ops import masked_linear, masked_strips

    layer = BlockMaskedLinear(levels([2, 3]), levels([4, 5]), strict=True, activation="relu")
    x = torch.randn(6, 5, requires_grad=True)
    two_strips = masked_strips.LayerCuts(((0, 4, 2), (4, 9, 5)), ((0, 2, 4), (2, 5, 9)),
                                         ((0, 4, 2), (4, 9, 5)))  # fmt: skip
    monkeypatch.setattr(masked_strips, "cuts", lambda *args: two_strips)
    timings = []
    for choice, node in (("reference", "Relu"), ("blocked", "MaskedLinear"),
                         ("rows", "MaskedLinear")):  # fmt: skip
        monkeypatch.setattr(masked_linear, "_AUTO_BACKEND", {})
        monkeypatch.setattr(
            masked_linear, "_fastest_backend",
            lambda *args, choice=choice: timings.append(args[-1]) or choice,
        )  # fmt: skip
        out = layer(x)
        layer(x)  # the decision is kept: no second timing
        assert node in type(out.grad_fn).__name__
        want = torch.relu(x @ (layer.weight * layer.mask).t() + layer.bias)
        assert_close_scaled(out, want, 1e-6, choice)
    rows = ["rows"] if masked_linear._rows_available(x) else []
    assert timings == [["reference", "blocked", *rows]] * 3  # 6 rows: the row kernel is timed
    monkeypatch.setattr(masked_linear, "_AUTO_BACKEND", {})
    layer(torch.randn(40, 5))  # more rows than ROWS_MAX_BATCH: not a candidate
    assert timings[-1] == ["reference", "blocked"]


def test_the_whole_layer_timing_runs_every_candidate():
    from energyflow.ops import masked_linear

    plan = BlockMaskedLinear(levels([8] * 4), levels([8] * 4), strict=False).plan
    candidates = ["reference", "blocked"] + (["rows"] if "cpp" in FUSED_BACKENDS else [])
    for with_gradients in (False, True):
        choice = masked_linear._fastest_backend(
            plan, 16, torch.empty(0), True, "gelu", with_gradients, candidates
        )
        assert choice in candidates


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grouped_strips_match_the_strips_one_after_another(dtype):
    """The C++ grouped GEMMs (side by side, one thread each) give each pass the same values as
    the GEMMs run in turn: every cut of uneven levels, garbage past the prefixes."""
    from energyflow.ops import dispatch, masked_strips

    if not dispatch.cpp_available():
        pytest.skip("the C++ extension is not built")
    torch.manual_seed(3)
    plan = BlockMaskedLinear(
        levels([3, 0, 17, 1, 20, 2]), levels([5, 2, 19, 1, 11, 4]), strict=True
    ).plan
    groups = masked_strips.out_groups(plan.flat_groups)
    x = torch.randn(257, plan.in_features, dtype=dtype)
    dz = torch.randn(257, plan.out_features, dtype=dtype)
    weight = torch.randn(plan.out_features, plan.in_features, dtype=dtype)
    bias = torch.randn(plan.out_features, dtype=dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for count in (1, 2, 3, len(groups)):
            for kind, run in (
                ("forward", lambda c, g: masked_strips.forward(x, weight, bias, c, g)),
                ("grad_input", lambda c, g: masked_strips.grad_input(dz, weight, c, g)),
                ("grad_weight", lambda c, g: masked_strips.grad_weight(dz, x, c, g)),
            ):
                strips = masked_strips.cut(kind, groups, count)
                want, got = run(strips, False), run(strips, True)
                assert_close_scaled(got, want, 1e-12 if dtype == torch.float64 else 1e-5, kind)
    finally:
        torch.set_num_threads(threads)


def test_grouped_addmm_refuses_mismatched_products():
    from energyflow.ops import dispatch

    if not dispatch.cpp_available():
        pytest.skip("the C++ extension is not built")
    grouped_addmm_ = dispatch.cpp_module().grouped_addmm_
    out = torch.zeros(4, 3)
    with pytest.raises(RuntimeError, match=r"product 0 has shapes \[4, 2\] @ \[5, 3\]"):
        grouped_addmm_([out], [torch.ones(4, 2)], [torch.ones(5, 3)], 1.0)
    with pytest.raises(RuntimeError, match="the same length"):
        grouped_addmm_([out], [], [], 1.0)
    grouped_addmm_([out[:, :2], out[:, 2:]], [torch.ones(4, 2)] * 2, [torch.ones(2, 2),
                   torch.ones(2, 1)], 1.0)  # fmt: skip
    assert (out == 2).all()
