"""The kernel and variogram scores against their defining formulas, written out pair by pair."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import energyflow as ef
from helpers import assert_close_scaled


def _kernel_formula(samples, target, h):
    """KS_b = 1/(2m(m-1)) sum_{j != k} k(y_j, y_k) - (1/m) sum_j k(y_j, x) + 1/2, loop by loop."""

    def k(u, v):
        return math.exp(-float(((u - v) ** 2).sum()) / (2 * h * h))

    scores = []
    for ys, x in zip(samples, target):
        m = len(ys)
        within = sum(k(ys[j], ys[i]) for j, i in itertools.permutations(range(m), 2))
        scores.append(within / (2 * m * (m - 1)) - sum(k(y, x) for y in ys) / m + 0.5)
    return torch.tensor(scores, dtype=torch.float64)


def _variogram_formula(samples, target, p):
    """VS_b = sum_{d<e} (a^2 - 2 a mean_j v_j + sum_{j != k} v_j v_k / (m (m-1))), loop by loop."""
    scores = []
    for ys, x in zip(samples, target):
        m, dim, total = len(ys), len(x), 0.0
        for d, e in itertools.combinations(range(dim), 2):
            a = abs(float(x[d] - x[e])) ** p
            v = [abs(float(y[d] - y[e])) ** p for y in ys]
            products = sum(v[j] * v[i] for j, i in itertools.permutations(range(m), 2))
            total += a * a - 2 * a * sum(v) / m + products / (m * (m - 1))
        scores.append(total)
    return torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("m, dim", [(2, 1), (3, 3), (5, 17)])
@pytest.mark.parametrize("h", [0.1, 1.0, 7.0])
def test_kernel_score_formula(m, dim, h):
    gen = torch.Generator().manual_seed(m * 100 + dim)
    samples = torch.randn(4, m, dim, dtype=torch.float64, generator=gen) * 0.3
    target = torch.randn(4, dim, dtype=torch.float64, generator=gen) * 0.3
    want = _kernel_formula(samples, target, h)
    got = ef.kernel_score(samples, target, bandwidth=h, reduction="none")
    assert_close_scaled(got, want, 1e-12)
    weights = torch.rand(4, dtype=torch.float64, generator=gen)
    got_mean = ef.kernel_score(samples, target, bandwidth=h, weights=weights)
    assert torch.allclose(got_mean, (weights * want).sum() / weights.sum())
    got_sum = ef.kernel_score(samples, target, bandwidth=h, reduction="sum")
    assert torch.allclose(got_sum, want.sum())
    single = ef.kernel_score(samples[0], target[0], bandwidth=h, reduction="none")
    assert single.shape == () and torch.allclose(single, want[0])


@pytest.mark.parametrize("m, dim", [(2, 2), (3, 3), (4, 17)])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_variogram_score_formula(m, dim, p):
    gen = torch.Generator().manual_seed(m * 10 + dim)
    samples = torch.randn(3, m, dim, dtype=torch.float64, generator=gen) + 100.0  # an offset
    target = torch.randn(3, dim, dtype=torch.float64, generator=gen) + 100.0
    want = _variogram_formula(samples, target, p)
    got = ef.variogram_score(samples, target, p=p, reduction="none")
    assert_close_scaled(got, want, 1e-10)
    single = ef.variogram_score(samples[0], target[0], p=p)
    assert torch.allclose(single, want[0])


def test_scores_are_unbiased_for_their_expectations():
    """Averaged over many independent sample sets, each estimate matches its closed form: the
    kernel score of N(0, s^2) at x in 1-D and the variogram score of a Gaussian pair."""
    gen = torch.Generator().manual_seed(3)
    s, h, x = 0.8, 0.5, 0.3
    samples = torch.randn(20000, 3, 1, dtype=torch.float64, generator=gen) * s
    target = torch.full((20000, 1), x, dtype=torch.float64)
    got = ef.kernel_score(samples, target, bandwidth=h)
    # E k(Y, Y') = h / sqrt(h^2 + 2 s^2)
    # E k(Y, x) = h / sqrt(h^2 + s^2) exp(-x^2 / (2 (h^2 + s^2)))
    want = (
        0.5 * h / math.sqrt(h * h + 2 * s * s)
        - h / math.sqrt(h * h + s * s) * math.exp(-x * x / (2 * (h * h + s * s)))
        + 0.5
    )
    assert abs(float(got) - want) < 4e-3
    # variogram, p = 2: E (Y_1 - Y_2)^2 = 2 for independent standard normals
    samples = torch.randn(20000, 3, 2, dtype=torch.float64, generator=gen)
    target = torch.tensor([[1.0, -0.5]], dtype=torch.float64).expand(20000, 2)
    got = ef.variogram_score(samples, target, p=2.0)
    assert abs(float(got) - (1.5**2 - 2.0) ** 2) < 0.05


def test_scores_prefer_the_true_distribution():
    """Proper scores rank the right model first: a too-wide model and a model without the true
    dependence score worse, in expectation, than samples from the truth."""
    gen = torch.Generator().manual_seed(4)
    n, m = 4000, 4
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64))
    target = torch.randn(n, 2, dtype=torch.float64, generator=gen) @ chol.T
    truth = torch.randn(n, m, 2, dtype=torch.float64, generator=gen) @ chol.T
    wide = 2.0 * truth
    independent = torch.randn(n, m, 2, dtype=torch.float64, generator=gen)
    for wrong in (wide, independent):
        assert ef.kernel_score(truth, target, bandwidth=0.5) < ef.kernel_score(
            wrong, target, bandwidth=0.5
        )
    assert ef.variogram_score(truth, target) < ef.variogram_score(independent, target)


def test_gradcheck_fp64():
    gen = torch.Generator().manual_seed(5)
    samples = torch.randn(3, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    weights = torch.rand(3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, t, w: ef.kernel_score(s, t, bandwidth=0.7, weights=w), (samples, target, weights)
    )
    assert torch.autograd.gradcheck(
        lambda s, t, w: ef.variogram_score(s, t, p=0.7, weights=w), (samples, target, weights)
    )


def test_fp32_and_half_precision():
    gen = torch.Generator().manual_seed(6)
    samples = torch.randn(17, 3, 5, generator=gen)
    target = torch.randn(17, 5, generator=gen)
    for score, options in ((ef.kernel_score, {"bandwidth": 0.5}), (ef.variogram_score, {})):
        want = score(samples.double(), target.double(), **options, reduction="none")
        got = score(samples, target, **options, reduction="none")
        assert got.dtype == torch.float32
        assert_close_scaled(got, want.float(), 1e-5)
        half = score(samples.bfloat16(), target.bfloat16(), **options, reduction="none")
        assert half.dtype == torch.float32  # combined in the accumulation dtype
        assert_close_scaled(half, want.float(), 5e-2)


def test_duplicate_coordinates_give_finite_gradients():
    """|0|^p has an infinite slope for p < 1: equal coordinates and duplicates stay finite."""
    samples = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [2.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0]])
    loss = ef.variogram_score(samples, target, p=0.5) + ef.kernel_score(samples, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(samples.grad).all()


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: ef.kernel_score(torch.randn(3, 1, 2), torch.randn(3, 2)), ValueError, "m >= 2"),
        (
            lambda: ef.kernel_score(torch.randn(3, 4, 2), torch.randn(3, 2), bandwidth=0.0),
            ValueError,
            "bandwidth must be a positive",
        ),
        (
            lambda: ef.kernel_score(torch.randn(3, 4, 2), torch.randn(3, 2), bandwidth="1"),
            TypeError,
            "bandwidth",
        ),
        (
            lambda: ef.kernel_score(torch.randn(3, 4, 2), torch.randn(3, 3)),
            ValueError,
            "feature dimension",
        ),
        (
            lambda: ef.variogram_score(torch.randn(3, 4, 1), torch.randn(3, 1)),
            ValueError,
            "D >= 2",
        ),
        (
            lambda: ef.variogram_score(torch.randn(3, 4, 2), torch.randn(3, 2), p=2.5),
            ValueError,
            r"p must be in \(0, 2\]",
        ),
        (
            lambda: ef.variogram_score(torch.randn(3, 4, 2), torch.randn(2)),
            ValueError,
            "target must have shape",
        ),
        (
            lambda: ef.variogram_score(torch.randn(3, 4, 2), torch.full((3, 2), float("nan"))),
            ValueError,
            "NaN",
        ),
        (
            lambda: ef.kernel_score(torch.randn(3, 4, 2), torch.randn(3, 2), reduction="avg"),
            ValueError,
            "reduction",
        ),
    ],
)
def test_bad_input_raises_named_error(call, error, words):
    with pytest.raises(error, match=words):
        call()
