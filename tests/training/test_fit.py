"""fit(): each estimator and objective trains, checkpoints resume bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energyflow.models import BlockAffineFlow, SemiAutoregressiveGenerator
from energyflow.training import metrics
from energyflow.training.data import toy
from energyflow.training.fit import fit

SMALL = dict(hidden_features=(16,))


@pytest.mark.parametrize("estimator", ["distance", "score", "sliced"])
def test_energy_training_reduces_the_distance(estimator):
    data = torch.as_tensor(toy("8gaussians", 2000, np.random.default_rng(0)))
    model = SemiAutoregressiveGenerator(2, 2, hidden_features=(32, 32))
    before = metrics.sample_energy_distance(model.sample((1000,)), data[:1000])
    fit(model, data, estimator=estimator, steps=150, batch_size=128, lr=3e-3, progress=False)
    after = metrics.sample_energy_distance(model.sample((1000,)), data[:1000])
    assert after < 0.5 * before


def test_mle_and_conditional_score_training_run():
    data = torch.randn(500, 3) * torch.tensor([1.0, 2.0, 0.5])
    flow = BlockAffineFlow(3, 3, transforms=1, **SMALL)
    start = -flow.log_prob(data).mean().item()
    fit(flow, data, objective="mle", steps=100, batch_size=64, lr=1e-2, progress=False)
    assert -flow.log_prob(data).mean().item() < start
    context = torch.randn(500, 1)
    model = SemiAutoregressiveGenerator(3, 3, context_features=1, **SMALL)
    state = fit(
        model,
        data + context,
        context=context,
        estimator="score",
        steps=5,
        batch_size=32,
        progress=False,
    )
    assert state.step == 5
    with pytest.raises(ValueError, match="estimator='score'"):
        fit(model, data, context=context, estimator="distance", steps=1, progress=False)
    with pytest.raises(ValueError, match="needs a model with a density"):
        fit(model, data, context=context, objective="mle", steps=1, progress=False)


def test_resume_continues_bit_for_bit(tmp_path):
    data = torch.as_tensor(toy("moons", 1000, np.random.default_rng(1)))
    settings = dict(steps=40, batch_size=64, lr=1e-3, seed=3, checkpoint_every=20, progress=False)

    def new_model():
        torch.manual_seed(0)
        return SemiAutoregressiveGenerator(2, 2, **SMALL)

    straight = new_model()
    whole = fit(straight, data, checkpoint=tmp_path / "a.pt", **settings)
    # the same run, killed after its step-20 checkpoint (evaluate raises at step 21), then resumed
    stopped = new_model()
    with pytest.raises(KeyboardInterrupt):
        fit(
            stopped,
            data,
            checkpoint=tmp_path / "b.pt",
            evaluate=_interrupt_at(20),
            eval_every=1,
            **settings,
        )
    resumed = new_model()
    state = fit(resumed, data, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    assert state.step == whole.step == 40
    assert [h["loss"] for h in state.history] == [h["loss"] for h in whole.history]
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def _interrupt_at(step):
    calls = {"n": 0}

    def evaluate(model):
        calls["n"] += 1
        if calls["n"] > step:
            raise KeyboardInterrupt
        return {}

    return evaluate
