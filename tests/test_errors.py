"""Bad input gets a ValueError/TypeError that names the argument."""

from __future__ import annotations

import pytest
import torch

import energyflow as ef

X, Y = torch.randn(5, 3), torch.randn(4, 3)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: ef.pairwise_power_sum(X, torch.randn(4, 2)), ValueError, "feature dimension"),
        (lambda: ef.pairwise_power_sum(torch.randn(5)), ValueError, "x must have shape"),
        (lambda: ef.pairwise_power_sum(torch.randn(1, 2, 5, 3)), ValueError, "x must have shape"),
        (
            lambda: ef.pairwise_power_sum(torch.randn(2, 5, 3), torch.randn(3, 4, 3)),
            ValueError,
            "batch size",
        ),
        (lambda: ef.pairwise_power_sum(X, torch.randn(1, 4, 3)), ValueError, "both must be"),
        (lambda: ef.pairwise_power_sum(X, Y.double()), TypeError, "dtype"),
        (lambda: ef.pairwise_power_sum(X.to("meta"), Y), ValueError, "device"),
        (lambda: ef.pairwise_power_sum(torch.ones(5, 3, dtype=torch.int64)), TypeError, "floating"),
        (lambda: ef.pairwise_power_sum([[1.0]]), TypeError, "torch.Tensor"),
        (lambda: ef.pairwise_power_sum(torch.tensor([[float("nan"), 1.0]])), ValueError, "NaN"),
        (
            lambda: ef.pairwise_power_sum(X, torch.full((4, 3), float("inf"))),
            ValueError,
            "y contains NaN",
        ),
        (lambda: ef.pairwise_power_sum(X, x_weights=-torch.ones(5)), ValueError, "negative"),
        (lambda: ef.pairwise_power_sum(X, x_weights=torch.zeros(5)), ValueError, "positive"),
        (
            lambda: ef.pairwise_power_sum(X, x_weights=torch.ones(4)),
            ValueError,
            "x_weights must have shape",
        ),
        (
            lambda: ef.pairwise_power_sum(X, x_weights=torch.tensor([1.0, float("nan"), 1, 1, 1])),
            ValueError,
            "x_weights",
        ),
        (lambda: ef.pairwise_power_sum(X, y_weights=torch.ones(4)), ValueError, "y_weights"),
        (lambda: ef.pairwise_power_sum(X, Y, beta=0.0), ValueError, "beta"),
        (lambda: ef.pairwise_power_sum(X, Y, beta=2.5), ValueError, "beta"),
        (lambda: ef.pairwise_power_sum(X, Y, beta="1"), TypeError, "beta"),
        (lambda: ef.pairwise_power_sum(torch.randn(0, 3)), ValueError, "empty"),
        (lambda: ef.pairwise_power_sum(X, torch.randn(4, 0)), ValueError, "empty"),
        (lambda: ef.pairwise_power_sum(X, Y, backend="cuda"), ValueError, "backend must be one of"),
        (lambda: ef.energy_score(torch.randn(3, 1, 2), torch.randn(3, 2)), ValueError, "m >= 2"),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(3, 3)),
            ValueError,
            "feature dimension",
        ),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(2, 2)),
            ValueError,
            "batch size",
        ),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(3)),
            ValueError,
            "target must have shape",
        ),
        (
            lambda: ef.energy_score(
                torch.randn(4, 3, 2), torch.randn(4, 2), weights=torch.ones(4, 1)
            ),
            ValueError,
            r"weights must have shape \(4,\)",
        ),
        (
            lambda: ef.energy_distance(X, Y, x_weights=torch.full((5,), 1e38)),
            ValueError,
            "x_weights sum to inf",
        ),
        (lambda: ef.energy_distance(X, Y, beta=complex(1, 0)), TypeError, "beta"),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(3, 2), reduction="avg"),
            ValueError,
            "reduction",
        ),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(3, 2), weights=torch.ones(2)),
            ValueError,
            "weights",
        ),
        (
            lambda: ef.energy_score(torch.randn(3, 4, 2), torch.randn(3, 2), weights=[1, 1, 1]),
            TypeError,
            "weights",
        ),
        (lambda: ef.energy_distance(X, Y, statistic="w"), ValueError, "statistic"),
        (
            lambda: ef.energy_distance(X, Y, statistic="u", x_weights=torch.rand(5) + 0.1),
            ValueError,
            "x_weights is not uniform",
        ),
        (lambda: ef.energy_distance(X[:1], Y, statistic="u"), ValueError, "at least 2 points in x"),
        (lambda: ef.sliced_energy_distance(X, Y, num_projections=0), ValueError, "num_projections"),
        (lambda: ef.sliced_energy_distance(X, torch.randn(4, 2)), ValueError, "feature dimension"),
    ],
)
def test_bad_input_raises_named_error(call, error, words):
    with pytest.raises(error, match=words):
        call()
