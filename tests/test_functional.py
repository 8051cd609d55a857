"""Energy score, energy distance and the sliced estimator against their defining formulas."""

from __future__ import annotations

import math

import pytest
import torch

import energyflow as ef
from energyflow.functional import sphere_mean_abs_constant
from helpers import FUSED_BACKENDS, assert_close_scaled

ALL_BACKENDS = FUSED_BACKENDS + ["reference"]


def _dist_pow(x, y, beta):
    return (x[..., :, None, :] - y[..., None, :, :]).norm(dim=-1) ** beta


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5])
def test_energy_score_formula(backend, beta):
    samples = torch.randn(5, 4, 3, dtype=torch.float64)
    target = torch.randn(5, 3, dtype=torch.float64)
    m = samples.shape[1]
    first = _dist_pow(target[:, None], samples, beta)[:, 0].mean(-1)
    second = _dist_pow(samples, samples, beta).sum((-1, -2)) / (2 * m * (m - 1))
    want = first - second
    got = ef.energy_score(samples, target, beta=beta, reduction="none", backend=backend)
    assert_close_scaled(got, want, 1e-10)
    weights = torch.rand(5, dtype=torch.float64)
    got_mean = ef.energy_score(samples, target, beta=beta, weights=weights, backend=backend)
    assert torch.allclose(got_mean, (weights * want).sum() / weights.sum())
    assert torch.allclose(
        ef.energy_score(samples, target, beta=beta, reduction="sum", backend=backend), want.sum()
    )
    # one unbatched target
    single = ef.energy_score(samples[0], target[0], beta=beta, reduction="none", backend=backend)
    assert single.shape == () and torch.allclose(single, want[0])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_energy_distance_v_and_u(backend, beta):
    x = torch.randn(7, 2, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64) + 0.5
    n, m = len(x), len(y)
    dxy, dxx, dyy = _dist_pow(x, y, beta), _dist_pow(x, x, beta), _dist_pow(y, y, beta)
    want_v = 2 * dxy.mean() - dxx.mean() - dyy.mean()
    want_u = 2 * dxy.mean() - dxx.sum() / (n * (n - 1)) - dyy.sum() / (m * (m - 1))
    assert torch.allclose(ef.energy_distance(x, y, beta=beta, backend=backend), want_v)
    assert torch.allclose(
        ef.energy_distance(x, y, beta=beta, statistic="u", backend=backend), want_u
    )
    no_xx = ef.energy_distance(x, y, beta=beta, include_xx=False, backend=backend)
    assert torch.allclose(no_xx, want_v + dxx.mean())
    # weighted V: weights are normalised
    a, b = torch.rand(n, dtype=torch.float64), torch.rand(m, dtype=torch.float64)
    an, bn = a / a.sum(), b / b.sum()
    want_w = 2 * an @ dxy @ bn - an @ dxx @ an - bn @ dyy @ bn
    got_w = ef.energy_distance(x, y, beta=beta, x_weights=3 * a, y_weights=b, backend=backend)
    assert torch.allclose(got_w, want_w)
    # batched
    xb, yb = torch.stack([x, x + 1]), torch.stack([y, y * 2])
    got_b = ef.energy_distance(xb, yb, beta=beta, backend=backend)
    assert got_b.shape == (2,) and torch.allclose(got_b[0], want_v)


def test_energy_distance_zero_for_equal_sets_and_positive_otherwise():
    x = torch.randn(50, 3, dtype=torch.float64)
    assert abs(float(ef.energy_distance(x, x.clone()))) < 1e-12
    assert float(ef.energy_distance(x, x + 0.5)) > 0


def test_gradients_flow_to_weights():
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.randn(4, 2, dtype=torch.float64)
    a = torch.rand(6, dtype=torch.float64, requires_grad=True)
    b = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: ef.energy_distance(x, y, x_weights=a, y_weights=b), (a, b)
    )


def test_sphere_constant():
    assert sphere_mean_abs_constant(1) == pytest.approx(1.0)
    assert sphere_mean_abs_constant(2) == pytest.approx(math.pi / 2)
    # Monte Carlo: E|w.v| = |v| / c_D
    w = torch.randn(200_000, 5, dtype=torch.float64)
    w = w / w.norm(dim=-1, keepdim=True)
    assert (w[:, 0].abs().mean() * sphere_mean_abs_constant(5)).item() == pytest.approx(
        1.0, abs=5e-3
    )


def test_sliced_energy_distance_unbiased_and_variance_shrinks():
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randn(30, 4, dtype=torch.float64) * 1.3 + 0.4
    a = torch.rand(40, dtype=torch.float64)
    exact = float(ef.energy_distance(x, y, x_weights=a, backend="reference"))

    def draws(num_projections, seeds):
        return torch.stack(
            [
                ef.sliced_energy_distance(
                    x,
                    y,
                    x_weights=a,
                    num_projections=num_projections,
                    generator=torch.Generator().manual_seed(seed),
                )
                for seed in seeds
            ]
        )

    small, large = draws(4, range(400)), draws(64, range(1000, 1400))
    # unbiased: the mean over seeds is within 4 standard errors of the exact value
    for values in (small, large):
        stderr = values.std() / math.sqrt(len(values))
        assert abs(values.mean().item() - exact) < 4 * stderr.item() + 1e-12
    # spread ~ 1/sqrt(L): 16x the projections gives ~4x smaller std
    ratio = (small.std() / large.std()).item()
    assert 3.0 < ratio < 5.3, ratio


def test_sliced_energy_distance_matches_exact_in_1d_and_is_differentiable():
    # D = 1: every direction is +-1, so the estimate is exact
    x = torch.randn(17, 1, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9, 1, dtype=torch.float64)
    got = ef.sliced_energy_distance(x, y, num_projections=3)
    want = ef.energy_distance(x, y, backend="reference")
    assert torch.allclose(got, want)
    (g_got,) = torch.autograd.grad(got, x)
    (g_want,) = torch.autograd.grad(want, x)
    assert torch.allclose(g_got, g_want)
    # batched with chunked directions gives the same as one chunk
    xb, yb = torch.randn(2, 11, 3), torch.randn(2, 13, 3)
    one = ef.sliced_energy_distance(
        xb, yb, num_projections=8, generator=torch.Generator().manual_seed(1)
    )
    chunked = ef.sliced_energy_distance(
        xb, yb, num_projections=8, generator=torch.Generator().manual_seed(1), max_chunk_elements=24
    )
    assert one.shape == (2,) and torch.allclose(one, chunked, rtol=1e-5)


def test_torch_compile_fullgraph():
    """The fused ops are custom ops with fake kernels: a loss compiles with fullgraph=True."""
    backend = "cpp" if "cpp" in FUSED_BACKENDS else "reference"
    model = torch.nn.Linear(3, 3)

    def loss_fn(noise, data):
        return ef.energy_distance(data, model(noise), include_xx=False, backend=backend)

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    noise, data = torch.randn(16, 3), torch.randn(20, 3)
    got = compiled(noise, data)
    grads = torch.autograd.grad(got, list(model.parameters()))
    want = loss_fn(noise, data)
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    assert torch.allclose(got, want, rtol=1e-5)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_combine_in_fp32(backend, dtype):
    """Two close half-precision samples: the three terms of the energy distance are combined in
    fp32 (rounding each to bf16 first cancelled them to exactly 0), and the result is fp32."""
    x = (torch.randn(120, 2) + 3.0).to(dtype)
    y = (torch.randn(120, 2) * 1.1 + 3.05).to(dtype)
    got = ef.energy_distance(x, y, backend=backend)
    want = ef.energy_distance(x.double(), y.double(), backend="reference")
    assert got.dtype == torch.float32 and want > 0
    assert abs(got.double() - want) <= 1e-3 * abs(want) + 1e-6, (got, want)
    score = ef.energy_score(y.reshape(40, 3, 2), x[:40], backend=backend)
    want_score = ef.energy_score(y.reshape(40, 3, 2).double(), x[:40].double(), backend="reference")
    assert score.dtype == torch.float32
    assert abs(score.double() - want_score) <= 1e-3 * abs(want_score)


def test_real_number_types_are_accepted_for_beta():
    import numpy as np

    x, y = torch.randn(6, 2), torch.randn(5, 2)
    want = ef.energy_distance(x, y, beta=0.5)
    for beta in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5).item()):
        assert torch.equal(ef.energy_distance(x, y, beta=beta), want)
