"""The direct energy-score kernel (every pair of a target at once, small m) against the
pairwise path and the reference: values, gradients, gradcheck, and when it is used."""

from __future__ import annotations

import pytest
import torch

import energyflow as ef
from energyflow.ops import dispatch, energy_score
from helpers import FUSED_BACKENDS, assert_close_scaled

pytestmark = pytest.mark.skipif(
    "cpp" not in FUSED_BACKENDS, reason="the C++ extension is not built"
)
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _value_and_grads(backend, samples, target, beta, weights):
    value = ef.energy_score(samples, target, beta=beta, weights=weights, backend=backend)
    return [value.detach(), *torch.autograd.grad(value, [samples, target])]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [0.3, 0.7, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("m", [2, 3, 16])
def test_direct_path_matches_reference(dtype, beta, m):
    for b, d in ((1, 1), (3, 17), (65, 64), (7, 300)):
        samples = torch.randn(b, m, d, dtype=dtype, requires_grad=True)
        target = (torch.randn(b, d, dtype=dtype) + 0.5).requires_grad_()
        weights = torch.rand(b, dtype=dtype) + 0.1
        got = _value_and_grads("cpp", samples, target, beta, weights)
        want = _value_and_grads("reference", samples, target, beta, weights)
        for name, g, w in zip(("value", "samples", "target"), got, want):
            # (in 1-D with m = 2 the sample gradients can cancel to exactly 0: floor 1)
            assert_close_scaled(g, w, RTOL[dtype], f"{name} B={b} m={m} D={d}", floor=1.0)


def test_direct_path_duplicates_have_subgradient_zero():
    target = torch.randn(4, 3, dtype=torch.float64)
    samples = torch.stack([target, target, target + 1.0], dim=1).requires_grad_()  # m = 3
    target.requires_grad_()
    got = _value_and_grads("cpp", samples, target, 0.5, None)
    want = _value_and_grads("reference", samples, target, 0.5, None)
    for g, w in zip(got, want):
        assert_close_scaled(g, w, 1e-12, "duplicates", floor=1.0)


def test_direct_path_gradcheck():
    samples = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for beta in (0.5, 1.0, 1.7):
        assert torch.autograd.gradcheck(
            lambda s, t: ef.energy_score(s, t, beta=beta, reduction="none", backend="cpp"),
            (samples, target),
        )


def test_direct_path_is_used_up_to_its_limit(monkeypatch):
    calls = []
    real = dispatch.cpp_module()

    class Spy:
        def energy_score_direct(self, *args):
            calls.append("direct")
            return real.energy_score_direct(*args)

        def __getattr__(self, name):  # row_stats, cross_stats, self_stats: the pairwise kernel
            def call(*args):
                calls.append("pairwise")
                return getattr(real, name)(*args)

            return call

    monkeypatch.setattr(dispatch, "cpp_module", lambda: Spy())
    limit = energy_score.DIRECT_MAX_SAMPLES
    for m, path in ((2, "direct"), (limit, "direct"), (limit + 1, "pairwise")):
        calls.clear()
        samples = torch.randn(6, m, 5, dtype=torch.float64, requires_grad=True)
        target = torch.randn(6, 5, dtype=torch.float64)
        got = ef.energy_score(samples, target, backend="cpp")
        got.backward()
        assert set(calls) == {path}, (m, calls)
        want = ef.energy_score(samples, target, backend="reference")
        assert_close_scaled(got.detach(), want.detach(), 1e-12, f"m={m}")


def test_direct_path_without_gradients_and_under_compile():
    samples, target = torch.randn(8, 2, 3), torch.randn(8, 3)
    with torch.no_grad():
        plain = ef.energy_score(samples, target, reduction="none")
    compiled = torch.compile(
        lambda s, t: ef.energy_score(s, t, reduction="none"), fullgraph=True, backend="aot_eager"
    )
    s = samples.clone().requires_grad_()
    got = compiled(s, target)
    got.sum().backward()
    assert_close_scaled(got.detach(), plain, 1e-6, "compiled")
    assert s.grad is not None and torch.isfinite(s.grad).all()
