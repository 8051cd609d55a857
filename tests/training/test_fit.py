"""fit(): each estimator and objective trains, checkpoints resume bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from energyflow import metrics
from energyflow.models import BlockAffineFlow, SemiAutoregressiveGenerator
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


def _straight_and_resumed(tmp_path, data, settings: dict, stop_after: int):
    """An uninterrupted run, and the same run killed after its step-``stop_after`` checkpoint
    (evaluate raises at the next step) then resumed: (model, state) of each."""

    def new_model():
        torch.manual_seed(0)
        return SemiAutoregressiveGenerator(2, 2, **SMALL)

    straight = new_model()
    whole = fit(straight, data, checkpoint=tmp_path / "a.pt", **settings)
    stopped = new_model()
    with pytest.raises(KeyboardInterrupt):
        fit(
            stopped,
            data,
            checkpoint=tmp_path / "b.pt",
            evaluate=_interrupt_at(stop_after),
            eval_every=1,
            **settings,
        )
    resumed = new_model()
    state = fit(resumed, data, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    return whole, state


def test_resume_continues_bit_for_bit(tmp_path):
    data = torch.as_tensor(toy("moons", 1000, np.random.default_rng(1)))
    settings = dict(steps=40, batch_size=64, lr=1e-3, seed=3, checkpoint_every=20, progress=False)
    whole, state = _straight_and_resumed(tmp_path, data, settings, stop_after=20)
    assert state.step == whole.step == 40
    assert [h["loss"] for h in state.history] == [h["loss"] for h in whole.history]


def _interrupt_at(step):
    calls = {"n": 0}

    def evaluate(model):
        calls["n"] += 1
        if calls["n"] > step:
            raise KeyboardInterrupt
        return {}

    return evaluate


def test_resume_with_averaging_and_validation_is_bit_for_bit(tmp_path):
    data = torch.as_tensor(toy("moons", 600, np.random.default_rng(2)))
    settings = dict(
        steps=30,
        batch_size=32,
        seed=5,
        checkpoint_every=10,
        ema=0.9,
        val_fraction=0.2,
        val_every=5,
        warmup_steps=5,
        progress=False,
    )

    whole, state = _straight_and_resumed(tmp_path, data, settings, stop_after=10)
    assert [h.get("val_loss") for h in state.history] == [h.get("val_loss") for h in whole.history]
    assert (state.best_val, state.best_step) == (whole.best_val, whole.best_step)


def test_validation_keeps_the_best_weights_and_patience_stops():
    data = torch.as_tensor(toy("8gaussians", 1000, np.random.default_rng(3)))
    model = SemiAutoregressiveGenerator(2, 1, **SMALL)
    state = fit(
        model,
        data,
        steps=60,
        batch_size=64,
        lr=3e-3,
        val_fraction=0.25,
        val_every=10,
        progress=False,
    )
    values = [(h["val_loss"], h["step"]) for h in state.history if "val_loss" in h]
    assert [step for _, step in values] == [10, 20, 30, 40, 50, 60]
    assert (state.best_val, state.best_step) == min(values)
    # the model ends with the best weights: validating them again gives the best value
    again = fit(
        model,
        data,
        steps=1,
        lr=1e-12,
        batch_size=64,
        val_fraction=0.25,
        val_every=1,
        progress=False,
    )
    assert again.history[0]["val_loss"] == pytest.approx(state.best_val, rel=1e-4)
    # a learning rate too small to change anything: no validation improves on the first
    still = SemiAutoregressiveGenerator(2, 1, **SMALL)
    stopped = fit(
        still,
        data,
        steps=1000,
        batch_size=64,
        lr=1e-12,
        val_fraction=0.25,
        val_every=5,
        patience=2,
        progress=False,
    )
    assert stopped.stopped_by == "patience" and stopped.step == 15


def test_time_budget_ends_the_run_and_its_schedule():
    data = torch.randn(300, 2)
    model = SemiAutoregressiveGenerator(2, 1, **SMALL)
    state = fit(model, data, steps=10**7, batch_size=32, lr=1e-3, time_budget=1.0, progress=False)
    assert state.stopped_by == "time_budget" and 1.0 <= state.seconds < 3.0
    assert state.history[-1]["lr"] < 0.05 * 1e-3  # the cosine has reached its floor
    assert state.history[0]["lr"] == pytest.approx(1e-3, rel=1e-3)


def test_weight_average_is_the_final_model():
    data = torch.randn(300, 2)
    torch.manual_seed(0)
    plain = SemiAutoregressiveGenerator(2, 1, **SMALL)
    torch.manual_seed(0)
    averaged = SemiAutoregressiveGenerator(2, 1, **SMALL)
    fit(plain, data, steps=20, batch_size=32, lr=1e-2, progress=False)
    fit(averaged, data, steps=20, batch_size=32, lr=1e-2, ema=0.9, progress=False)
    # same training trajectory, but the averaged model lags behind the last weights
    lag = [(p - q).abs().max() for p, q in zip(plain.parameters(), averaged.parameters())]
    assert max(lag) > 1e-3


def test_weight_average_follows_its_formula():
    from energyflow.training.averaging import WeightAverage

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.5)
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 3.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update(layer)
        decay = min(0.5, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * value
    assert average.shadow[0].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(layer, decay=1.0)


def test_hybrid_objective_is_energy_plus_weighted_nll():
    from energyflow.training.config import TrainConfig
    from energyflow.training.objective import Objective

    torch.manual_seed(0)
    flow = BlockAffineFlow(3, 3, transforms=1, **SMALL).double()
    x = torch.randn(40, 3, dtype=torch.float64) * 3 + 1
    flow.fit_standardisation(x)
    noise = torch.randn(40, 3, dtype=torch.float64)
    energy = Objective(flow, TrainConfig(objective="energy", estimator="distance", beta=1.0))(
        x, None, noise
    )
    nll = Objective(flow, TrainConfig(objective="mle"))(x, None, None)
    hybrid = Objective(
        flow, TrainConfig(objective="hybrid", estimator="distance", beta=1.0, hybrid_weight=0.5)
    )(x, None, noise)
    per_feature = (nll - flow.scale.log().sum()) / 3
    assert hybrid.item() == pytest.approx((energy + 0.5 * per_feature).item(), rel=1e-12)
    state = fit(flow, x, objective="hybrid", steps=5, batch_size=16, progress=False)
    assert state.step == 5 and all(np.isfinite(h["loss"]) for h in state.history)
    generator = SemiAutoregressiveGenerator(3, 1, **SMALL)
    with pytest.raises(ValueError, match="objective='hybrid' needs a model with a density"):
        fit(generator, x.float(), objective="hybrid", steps=1, progress=False)


def test_kernel_and_variogram_terms_are_added_to_the_energy_score():
    from energyflow import functional
    from energyflow.training.config import TrainConfig
    from energyflow.training.objective import Objective

    torch.manual_seed(1)
    model = SemiAutoregressiveGenerator(3, 1, context_features=2, **SMALL).double()
    x, context = torch.randn(30, 3, dtype=torch.float64) * 2, torch.randn(30, 2)
    model.fit_standardisation(x, context.double())
    context = context.double()
    settings = dict(estimator="score", samples_per_target=3, beta=0.5)
    objective = Objective(model, TrainConfig(**settings))
    noise = torch.randn(objective.noise_shape(30, conditional=True), dtype=torch.float64)
    samples = model.rsample_standardised((3,), context, noise=noise).transpose(0, 1)
    target = model.standardise(x)
    with_terms = Objective(
        model,
        TrainConfig(
            **settings,
            kernel_weight=0.3,
            kernel_bandwidth=0.2,
            variogram_weight=2.0,
            variogram_power=1.0,
        ),
    )(x, context, noise)
    want = (
        functional.energy_score(samples, target, beta=0.5)
        + 0.3 * functional.kernel_score(samples, target, bandwidth=0.2)
        + 2.0 * functional.variogram_score(samples, target, p=1.0)
    )
    assert with_terms.item() == pytest.approx(want.item(), rel=1e-12)
    assert objective(x, context, noise).item() == pytest.approx(
        functional.energy_score(samples, target, beta=0.5).item(), rel=1e-12
    )
    state = fit(
        model.float(),
        x.float(),
        context=context.float(),
        steps=5,
        batch_size=16,
        kernel_weight=1.0,
        variogram_weight=1.0,
        progress=False,
    )
    assert state.step == 5 and all(np.isfinite(h["loss"]) for h in state.history)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(device="tpu"), "device must be"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(val_fraction=1.5), "val_fraction must be in"),
        (dict(val_fraction=0.001), "too few rows"),
        (dict(ema=1.0), "ema must be in"),
        (dict(beta=2.0), "beta must be in"),
        (dict(time_budget=0.0), "time_budget must be"),
        (dict(estimator="sliced", beta=1.5), "beta = 1 only"),
        (dict(kernel_weight=1.0), "kernel_weight adds a kernel score term .* estimator='score'"),
        (dict(estimator="score", kernel_weight=-1.0), "kernel_weight must be >= 0"),
        (dict(estimator="score", kernel_weight=1.0, kernel_bandwidth=0.0), "kernel_bandwidth"),
        (dict(estimator="score", variogram_weight=1.0, variogram_power=3.0), "variogram_power"),
        (dict(variogram_weight=1.0, estimator="sliced"), "variogram_weight adds"),
    ],
)
def test_bad_settings_name_themselves(setting, message):
    model = SemiAutoregressiveGenerator(2, 1, **SMALL)
    with pytest.raises(ValueError, match=message):
        fit(model, torch.randn(100, 2), steps=1, progress=False, **setting)


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = SemiAutoregressiveGenerator(2, 1, **SMALL)
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(model, torch.randn(100, 2), steps=1, device="cuda", progress=False)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_an_fp32_loss(precision):
    data = torch.as_tensor(toy("8gaussians", 1000, np.random.default_rng(4)), dtype=torch.float32)
    model = SemiAutoregressiveGenerator(2, 2, hidden_features=(32, 32))
    before = metrics.sample_energy_distance(model.sample((1000,)), data[:1000])
    state = fit(
        model,
        data,
        steps=100,
        batch_size=128,
        lr=3e-3,
        precision=precision,
        device="cpu",
        progress=False,
    )
    after = metrics.sample_energy_distance(model.sample((1000,)), data[:1000])
    assert all(np.isfinite(h["loss"]) for h in state.history) and after < 0.6 * before
    assert next(model.parameters()).dtype == torch.float32


def test_compiled_training_matches_eager():
    data = torch.randn(200, 2)
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = SemiAutoregressiveGenerator(2, 1, **SMALL)
        state = fit(model, data, steps=3, batch_size=32, compile=compiled, progress=False)
        losses.append([h["loss"] for h in state.history])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_context_is_standardised_and_saved(tmp_path):
    from energyflow.models import load_model

    context = torch.randn(400, 2) * torch.tensor([100.0, 0.01]) + 50.0
    data = torch.randn(400, 2) + context[:, :1] / 100.0
    model = SemiAutoregressiveGenerator(2, 1, context_features=2, **SMALL)
    fit(model, data, context=context, steps=2, batch_size=32, val_fraction=0.0, progress=False)
    assert torch.allclose(model.context_loc, context.mean(0))
    assert torch.allclose(model.context_scale, context.std(0))
    model.save(tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert torch.equal(loaded.context_scale, model.context_scale)
    # a model saved before context standardisation existed loads with the identity
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("context_loc", "context_scale"):
        del saved["state"][key]
    torch.save(saved, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert torch.equal(old.context_loc, torch.zeros(2)) and torch.equal(
        old.context_scale, torch.ones(2)
    )


def test_a_diverging_run_is_reported_as_such_not_as_bad_data():
    """lr 1e20 drives the model's samples to inf: a FloatingPointError that says the run
    diverged (the data were checked before the first step); NaN in the data is the data's."""
    torch.manual_seed(0)
    model = SemiAutoregressiveGenerator(2, 1, hidden_features=(16,))
    with pytest.raises(FloatingPointError, match="diverged; lower the learning rate"):
        fit(model, torch.randn(300, 2), steps=50, batch_size=64, lr=1e20, progress=False)
    bad = torch.randn(300, 2)
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match="data contains NaN"):
        fit(model, bad, steps=5, batch_size=64, progress=False)
