"""Sample metrics on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energyflow.models import BlockAffineFlow
from energyflow.training import metrics


def test_metrics_behave():
    rng = np.random.default_rng(0)
    a, b, far = rng.normal(size=(600, 2)), rng.normal(size=(600, 2)), rng.normal(size=(600, 2)) + 3
    assert metrics.sample_energy_distance(a, b) < 0.05 < metrics.sample_energy_distance(a, far)
    assert metrics.mmd(a, b) < 0.01 < metrics.mmd(a, far)
    assert 0.35 < metrics.c2st(a, b) < 0.65 and metrics.c2st(a, far) > 0.95
    # KDE estimate of a standard normal's log-likelihood: -log(2 pi) - 1 = -2.84 in 2-D
    many = rng.normal(size=(20000, 2))
    assert abs(metrics.kde_log_likelihood(many, b) - (-math.log(2 * math.pi) - 1)) < 0.15
    flow = BlockAffineFlow(2, 2, transforms=1, hidden_features=(8,))  # identity at init: N(0, I)
    assert (
        abs(metrics.log_likelihood(flow, b) - (-math.log(2 * math.pi) - 0.5 * (b**2).sum(1).mean()))
        < 1e-4
    )
    with pytest.raises(ValueError, match="2-D"):
        metrics.sample_energy_distance(a[:, 0], b)
