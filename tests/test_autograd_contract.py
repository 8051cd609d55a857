"""The autograd contract of the public ops: every promise of a torch op, on every backend.

A property matrix: layouts (transposed, permuted, sliced with an offset, strided, expanded,
conv features) x kernel paths x which inputs need gradients x the passes each size takes
(row passes or the one-pass forms, forced by their thresholds) x fp32/fp64; double backward
(gradgradcheck, and second derivatives against the reference); the whole finite fp32 range;
torch.compile (errors and rescaling inside the graph); autocast; torch.func (grad, jacrev,
vmap); backends checked when a module is built.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import energyflow as ef
from energyflow.nn import BlockMaskedLinear, EnergyDistanceLoss, EnergyScoreLoss
from energyflow.ops import pairwise, second_order
from helpers import KERNEL_PATHS, assert_close_scaled

PATHS = KERNEL_PATHS + ["reference"]


# ---- layouts ---------------------------------------------------------------------------------
# Each maps a contiguous leaf (N, D) or (B, N, D) to a view with the same values and other strides,
# through differentiable ops (the gradient reaches the leaf).
def _transposed(t):
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def _permuted(t):
    t3 = t if t.dim() == 3 else t[None]
    view = t3.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    return view if t.dim() == 3 else view[0]


def _sliced(t):  # a storage offset and padded rows
    return F.pad(t, (1, 2, 2, 1))[..., 2:-1, 1:-2]


def _strided(t):  # every other row of a larger tensor
    return t.repeat_interleave(2, dim=-2)[..., ::2, :]


def _conv_features(t):  # (B, N, D) as conv features (B, D, H, W).flatten(2).transpose(1, 2)
    t3 = t if t.dim() == 3 else t[None]
    feat = t3.transpose(1, 2).reshape(t3.shape[0], t3.shape[2], t3.shape[1], 1).contiguous()
    view = feat.flatten(2).transpose(1, 2)
    return view if t.dim() == 3 else view[0]


LAYOUTS = {
    "transposed": _transposed,
    "permuted": _permuted,
    "sliced": _sliced,
    "strided": _strided,
    "conv": _conv_features,
}


def _ops(backend):
    """Public ops and modules as f(x (B, N, D), y (B, M, D), a (B, N), b (B, M)) -> scalar."""
    score = EnergyScoreLoss(beta=0.7, backend=backend)
    distance = EnergyDistanceLoss(beta=1.3, include_xx=True, backend=backend)
    return {
        "cross": lambda x, y, a, b: ef.pairwise_power_sum(
            x, y, beta=0.7, x_weights=a, y_weights=b, backend=backend
        ).sum(),
        "self": lambda x, y, a, b: ef.pairwise_power_sum(
            y, beta=1.3, x_weights=b, backend=backend
        ).sum(),
        "distance v": lambda x, y, a, b: ef.energy_distance(
            x, y, x_weights=a, y_weights=b, beta=0.5, backend=backend
        ).sum(),
        "distance u": lambda x, y, a, b: ef.energy_distance(
            x, y, statistic="u", backend=backend
        ).sum(),
        "score direct": lambda x, y, a, b: ef.energy_score(
            y[..., :4, :].reshape(-1, 2, y.shape[-1]),
            x[..., :2, :].reshape(-1, x.shape[-1]),
            backend=backend,
        ),  # fmt: skip
        "score pairwise": lambda x, y, a, b: ef.energy_score(
            y.reshape(-1, y.shape[-2], y.shape[-1]),
            x[..., 0, :].reshape(-1, x.shape[-1]),
            backend=backend,
        ),  # fmt: skip
        "loss modules": lambda x, y, a, b: (
            score(y[..., :4, :].reshape(-1, 2, y.shape[-1]), x[..., :2, :].reshape(-1, x.shape[-1]))
            + distance(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
        ),  # fmt: skip
    }


# Which passes a call takes: the row passes, or the one-pass forms (self sums over j > i and
# two-sided cross passes), forced by their thresholds so that small sets take both.
PASSES = {"row passes": (10**9, 0), "one pass": (1, pairwise.TWO_SIDED_MAX_BYTES)}


@pytest.fixture
def passes(monkeypatch):
    def select(name, backend):
        if backend != "cpp" and name != "row passes":
            pytest.skip("only the C++ kernel has one-pass forms")
        min_rows, max_bytes = PASSES[name]
        monkeypatch.setattr(pairwise, "SELF_ONE_PASS_MIN_ROWS", min_rows)
        monkeypatch.setattr(pairwise, "TWO_SIDED_MAX_BYTES", max_bytes)

    return select


def _leaves(dtype, batch=2, n=9, m=18, d=3):
    x = torch.randn(batch, n, d, dtype=dtype)
    y = torch.randn(batch, m, d, dtype=dtype) * 1.5 + 0.3
    y[:, 3] = x[:, 1]  # a duplicate across the sets
    a = torch.rand(batch, n, dtype=dtype) + 0.1
    b = torch.rand(batch, m, dtype=dtype) + 0.1
    return x, y, a, b


NEEDS = {"x": (True, False, False, False), "y": (False, True, False, False),
         "all": (True, True, True, True)}  # fmt: skip


def _value_and_grads(op, leaves, views):
    value = op(*views)
    wanted = [t for t in leaves if t.requires_grad]
    if not value.requires_grad:  # an op that does not read the inputs that need gradients
        return [value.detach()]
    return [value.detach(), *torch.autograd.grad(value, wanted, materialize_grads=True)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pass_name", list(PASSES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_any_layout_gives_the_contiguous_values_and_gradients(
    path, pass_name, dtype, use_path, passes
):
    backend = use_path(path)
    passes(pass_name, backend)
    ops = _ops(backend)
    layouts = LAYOUTS
    if backend == "triton":  # the interpreter is slow: a subset (its launcher copies anyway)
        kept = ("distance v", "score pairwise") if dtype == torch.float64 else ("distance v",)
        ops = {name: ops[name] for name in kept}
        layouts = {name: LAYOUTS[name] for name in ("permuted", "conv")}
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    base = _leaves(dtype)
    for name, op in ops.items():
        for needs_name, needs in NEEDS.items():
            leaves = [t.clone().requires_grad_(need) for t, need in zip(base, needs)]
            want = _value_and_grads(op, leaves, leaves)
            for layout_name, layout in layouts.items():
                views = [layout(t) if t.dim() == 3 else t for t in leaves[:2]] + leaves[2:]
                unbatched = [layout(t[0]) for t in leaves[:2]] + [t[0] for t in leaves[2:]]
                assert not views[0].is_contiguous() or layout_name == "strided"
                got = _value_and_grads(op, leaves, views)
                for g, w in zip(got, want):
                    assert_close_scaled(g, w, rtol, f"{name} {needs_name} {layout_name}")
                # the same layout of an unbatched set (N, D)
                got = _value_and_grads(op, leaves, unbatched)
                ref = _value_and_grads(op, leaves, [t[0] for t in leaves])
                for g, w in zip(got, ref):
                    assert_close_scaled(g, w, rtol, f"{name} {needs_name} {layout_name} (N, D)")


@pytest.mark.parametrize("path", PATHS)
def test_expanded_inputs_accumulate_their_gradients(path, use_path):
    """One set broadcast over the batch (``expand``): values and the summed gradient equal
    those of the materialised copy."""
    backend = use_path(path)
    base = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    others = torch.randn(3, 5, 3, dtype=torch.float64)
    got = ef.energy_distance(base.expand(3, 7, 3), others, backend=backend).sum()
    want = ef.energy_distance(base.expand(3, 7, 3).contiguous(), others, backend=backend).sum()
    assert_close_scaled(got.detach(), want.detach(), 1e-12, "value")
    (g_got,) = torch.autograd.grad(got, base)
    (g_want,) = torch.autograd.grad(want, base)
    assert_close_scaled(g_got, g_want, 1e-12, "grad")


# ---- double backward -----------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pass_name", list(PASSES))
def test_gradgradcheck(path, pass_name, use_path, passes, monkeypatch):
    backend = use_path(path)
    passes(pass_name, backend)
    monkeypatch.setattr(second_order, "BLOCK_ELEMENTS", 20)  # several blocks of rows
    small = backend == "triton"
    x = torch.randn(2, 4 if small else 6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3 if small else 5, 2, dtype=torch.float64, requires_grad=True)
    a = (torch.rand(2, x.shape[1], dtype=torch.float64) + 0.5).requires_grad_()
    b = (torch.rand(2, y.shape[1], dtype=torch.float64) + 0.5).requires_grad_()
    checks = [
        (lambda x, y, a, b: ef.pairwise_power_sum(x, y, beta=0.7, x_weights=a, y_weights=b,
                                                  backend=backend), (x, y, a, b)),
        (lambda y, b: ef.pairwise_power_sum(y, beta=1.4, x_weights=b, backend=backend), (y, b)),
        (lambda s, t: ef.energy_score(s, t, beta=1.2, reduction="none", backend=backend),
         (y, x[:, 0])),
    ]  # fmt: skip
    if small:  # the interpreter is slow: the score's pairwise form runs the same kernel
        checks = checks[:1]
    else:
        checks.append((lambda x, y: ef.energy_distance(x, y, beta=0.6, backend=backend), (x, y)))
        checks.append(  # m = 20 > 16 samples per target: the pairwise form of the score
            (
                lambda s, t: ef.energy_score(s, t, beta=0.9, backend=backend),
                (torch.randn(2, 20, 2, dtype=torch.float64, requires_grad=True), x[:, 0]),
            )
        )
    for fn, inputs in checks:
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_second_derivatives_equal_the_reference(path, use_path):
    """A gradient penalty's gradient (what gradient penalties and meta-learning train on):
    never zeros, equal to the reference's to rounding."""
    backend = use_path(path)

    def penalty_grads(be):
        x = torch.randn(2, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        y = torch.randn(2, 11, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        y.requires_grad_()
        loss = ef.energy_distance(x, y, beta=0.8, backend=be).sum() + ef.energy_score(
            y[:, :6].reshape(6, 2, 3), x[:, :3].reshape(6, 3), backend=be
        )
        gx, gy = torch.autograd.grad(loss, (x, y), create_graph=True)
        penalty = (
            gx.square().sum() + (gy * torch.linspace(0, 1, gy.numel()).reshape(gy.shape)).sum()
        )
        return torch.autograd.grad(penalty, (x, y))

    got, want = penalty_grads(backend), penalty_grads("reference")
    for g, w in zip(got, want):
        assert w.norm() > 1e-3
        assert_close_scaled(g, w, 1e-9, backend)


def test_masked_layers_double_backward_on_the_blocked_backend():
    layer = BlockMaskedLinear([0, 0, 1, 1, 2], [1, 1, 2, 2, 3], strict=True, activation="tanh")
    layer = layer.double()

    def fn(x, weight):
        return torch.func.functional_call(layer, {"weight": weight, "bias": layer.bias}, (x,))

    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    weight = (layer.weight.detach() * layer.mask).requires_grad_()
    assert torch.autograd.gradgradcheck(fn, (x, weight))


# ---- the finite fp32 range -----------------------------------------------------------------
def _public_calls(backend):
    """(name, fn(x (N, D), y (M, D)) -> scalar) for every public op."""
    return [
        ("pairwise", lambda x, y: ef.pairwise_power_sum(
            x, y, beta=0.7, x_weights=torch.full(x.shape[:1], 1e-3), backend=backend)),
        ("energy_distance", lambda x, y: ef.energy_distance(x, y, beta=1.0, backend=backend)),
        ("energy_score", lambda x, y: ef.energy_score(
            y[:12].reshape(4, 3, -1), x[:4], beta=0.5, backend=backend)),
        ("energy_score m=20", lambda x, y: ef.energy_score(
            y[:20].reshape(1, 20, -1), x[:1], beta=1.5, backend=backend)),
        ("sliced", lambda x, y: ef.sliced_energy_distance(
            x, y, num_projections=16, generator=torch.Generator().manual_seed(0))),
        ("kernel_score", lambda x, y: ef.kernel_score(
            y[:12].reshape(4, 3, -1), x[:4], bandwidth=float(x.abs().max()))),
        ("variogram_score", lambda x, y: ef.variogram_score(y[:12].reshape(4, 3, -1), x[:4])),
    ]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("magnitude", [3e38, 1e38, 1e25, 1e-40, 1e-44])
def test_finite_over_the_whole_fp32_range(path, magnitude, use_path):
    """fp32 points at any finite magnitude, subnormals included: finite values and gradients
    close to a float64 computation of the same fp32 points."""
    backend = use_path(path)
    x32 = ((torch.rand(24, 3, dtype=torch.float64) * 2 - 1) * magnitude).float()
    y32 = ((torch.rand(24, 3, dtype=torch.float64) * 2 - 1) * magnitude * 0.7).float()
    for name, fn in _public_calls(backend):
        x64 = x32.double().requires_grad_()
        want = fn(x64, y32.double())
        (want_grad,) = torch.autograd.grad(want, x64)
        label = f"{name} at {magnitude:g}"
        x = x32.clone().requires_grad_()
        if abs(want) > torch.finfo(torch.float32).max:  # the answer itself is no fp32 number
            with pytest.raises(ValueError, match="exceeds the range of torch.float32"):
                fn(x, y32)
            continue
        got = fn(x, y32)
        (grad,) = torch.autograd.grad(got, x)
        assert torch.isfinite(got), label
        # subnormal coordinates carry few bits: their distances are known to a few per cent
        rtol = 3e-2 if magnitude < 1e-38 else 2e-4
        assert abs(got.double() - want) <= rtol * abs(want) + 1e-45, (label, got, want)
        # a gradient is an fp32 number where the float64 one is (the kernel score's 1/h^2 at
        # h = 1e-40 is not)
        if want_grad.abs().max() < torch.finfo(torch.float32).max:
            assert_close_scaled(grad, want_grad.float(), rtol * 10, label)


def test_a_result_beyond_fp32_is_an_error_not_inf():
    x = (torch.rand(50, 3) * 2 - 1) * 3e38
    with pytest.raises(ValueError, match="exceeds the range of torch.float32"):
        ef.pairwise_power_sum(x)


# ---- torch.compile ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_compiled_ops_check_and_rescale_like_eager(path, use_path):
    backend = use_path(path)

    def losses(x, y):
        return (
            ef.energy_distance(x, y, backend=backend)
            + ef.energy_score(y[:8].reshape(4, 2, -1), x[:4], backend=backend)
            + ef.pairwise_power_sum(x, y, x_weights=torch.full_like(x[:, 0], 1e-3), backend=backend)
        )  # fmt: skip

    compiled = torch.compile(losses, fullgraph=True, backend="aot_eager")  # no graph break
    y = torch.randn(9, 3)
    for bad in (float("nan"), float("inf")):
        x = torch.randn(12, 3)
        x[3, 1] = bad
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            losses(x, y)
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            compiled(x, y)
    for magnitude in (1e25, 3e38, 1e-40):
        x = (torch.randn(12, 3) * 0.3 * magnitude).requires_grad_()
        y_far = (torch.randn(9, 3) * 0.3 * magnitude).float()
        got, want = compiled(x, y_far), losses(x, y_far)
        assert torch.isfinite(got) and torch.allclose(got, want, rtol=1e-5), (magnitude, got)
        (g_got,) = torch.autograd.grad(got, x)
        (g_want,) = torch.autograd.grad(want, x)
        assert torch.isfinite(g_got).all() and torch.allclose(g_got, g_want, rtol=1e-4)


# ---- autocast -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_autocast_computes_in_fp32_like_cdist(path, use_path):
    """A bf16 model output against fp32 data inside autocast works (as torch.cdist does) and
    is computed in fp32 on every backend, the reference's einsum included."""
    backend = use_path(path)
    data = torch.randn(40, 3)
    model = torch.nn.Linear(3, 3)
    noise = torch.randn(30, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        samples = model(noise)
        assert samples.dtype == torch.bfloat16
        got = ef.energy_distance(data, samples, backend=backend)
        score = ef.energy_score(samples[:20].reshape(10, 2, 3), data[:10], backend=backend)
    want = ef.energy_distance(data.double(), samples.double(), backend="reference")
    assert got.dtype == torch.float32 and abs(got.double() - want) <= 1e-5 * abs(want)
    assert score.dtype == torch.float32
    (grad,) = torch.autograd.grad(got + score, model.weight)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


# ---- torch.func -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_func_grad_jacrev_and_vmap(path, use_path):
    backend = use_path(path)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)

    def distance(x, y):
        return ef.energy_distance(x, y, beta=0.8, backend=backend)

    xg = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(distance(xg, y), xg)
    assert_close_scaled(torch.func.grad(distance)(x, y), want, 1e-12, "func.grad")

    samples = torch.randn(4, 3, 2, dtype=torch.float64)
    target = torch.randn(4, 2, dtype=torch.float64)

    def scores(s):
        return ef.energy_score(s, target, reduction="none", backend=backend)

    jac = torch.func.jacrev(scores)(samples)  # (4, 4, 3, 2)
    for b in range(4):
        s = samples.clone().requires_grad_()
        (row,) = torch.autograd.grad(scores(s)[b], s)
        assert_close_scaled(jac[b], row, 1e-12, f"jacrev row {b}")

    many = torch.randn(3, 6, 3, dtype=torch.float64)
    mapped = torch.func.vmap(distance, in_dims=(0, None))(many, y)
    looped = torch.stack([distance(m, y) for m in many])
    assert_close_scaled(mapped, looped, 1e-12, "vmap")
    mapped_grads = torch.func.vmap(torch.func.grad(distance), in_dims=(0, None))(many, y)
    looped_grads = torch.stack([torch.func.grad(distance)(m, y) for m in many])
    assert_close_scaled(mapped_grads, looped_grads, 1e-12, "vmap of grad")
    hessian = torch.func.jacrev(torch.func.jacrev(distance))(x, y)  # reverse over reverse
    assert hessian.shape == (6, 3, 6, 3) and hessian.abs().max() > 0


def test_vmap_checks_values_inside_the_kernels():
    many = torch.randn(3, 6, 2)
    many[1, 2, 0] = float("nan")
    y = torch.randn(4, 2)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        torch.func.vmap(lambda x: ef.energy_distance(x, y))(many)


# ---- modules check their backend when built ----------------------------------------------------
@pytest.mark.parametrize("module", [EnergyScoreLoss, EnergyDistanceLoss])
def test_loss_modules_check_their_backend_when_built(module, monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        module(backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        module(backend="nonsense")
    from energyflow.ops import dispatch

    monkeypatch.setitem(dispatch._LOADED, "cpp", (None, "not built here"))
    with pytest.raises(ValueError, match="not built here"):
        module(backend="cpp")
