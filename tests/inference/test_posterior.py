"""fit_posterior / Posterior: shapes, prior support, densities, persistence, errors, and the
Gaussian-linear target (C2ST <= 0.55 at 10^4 simulations)."""

from __future__ import annotations

import pytest
import torch

from energyflow.inference import BoxPrior, Posterior, fit_posterior, get_task, load_posterior
from energyflow.metrics import c2st
from energyflow.models import BlockAffineFlow

SMALL = dict(hidden_features=(16,))


@pytest.mark.slow_end_to_end
def test_gaussian_linear_posterior_reaches_c2st_055():
    """The energy-trained flow (the affine family holds the exact posterior). The generator
    reaches 0.56-0.59 here: its marginals are right, but it adds spurious correlations between
    dimensions, to which the energy score is weakly sensitive (study_posterior.md)."""
    task = get_task("gaussian_linear")
    theta, x = task.simulations(10000, seed=0)
    torch.manual_seed(0)
    flow = BlockAffineFlow(10, 10, transforms=2, context_features=10, hidden_features=(128, 128))
    posterior = fit_posterior(
        theta, x, model=flow, beta=1.0, samples_per_target=8, lr=1e-3, batch_size=256, steps=400
    )
    for i in (0, 1):
        draws, reference = (
            posterior.sample(2000, task.observations[i]),
            task.reference_posterior(i, 2000),
        )
        # the strong judge (sbibm's MLP C2ST, weaker, reads 0.51-0.53 here but costs 40 s)
        assert c2st(draws, reference) <= 0.55


def test_draws_stay_in_the_box_and_rejection_reports_its_rate():
    task = get_task("two_moons")
    theta, x = task.simulations(1000)
    transformed = fit_posterior(theta, x, prior=task.prior, steps=10, **SMALL)
    draws = transformed.sample(500, task.observations)
    assert draws.shape == (500, 10, 2) and bool(task.prior.contains(draws).all())
    # barely trained on theta itself, a good part of the model's mass lies outside the box
    rejecting = fit_posterior(theta, x, prior=task.prior, support="reject", steps=3, **SMALL)
    draws = rejecting.sample(300, task.observations[0])
    assert draws.shape == (300, 2) and bool(task.prior.contains(draws).all())
    assert 0 < rejecting.last_acceptance_rate < 1


def test_flow_posterior_density_integrates_to_one_over_the_box():
    prior = BoxPrior(-1.0, 1.0, dim=2)
    theta = prior.sample(300, torch.Generator().manual_seed(0))
    x = theta + 0.1 * torch.randn(300, 2)
    posterior = fit_posterior(
        theta, x, model="affine", objective="mle", prior=prior, steps=30, **SMALL
    )
    grid = torch.linspace(-1 + 1e-3, 1 - 1e-3, 400)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = posterior.log_prob(points, torch.tensor([0.3, -0.2])).exp()
    assert float(density.mean() * 4.0) == pytest.approx(1.0, abs=0.03)
    assert posterior.log_prob(torch.tensor([[1.5, 0.0]]), torch.zeros(2)).item() == float("-inf")
    energy_only = fit_posterior(theta, x, steps=2, **SMALL)
    with pytest.raises(NotImplementedError, match="no density"):
        energy_only.log_prob(theta[:2], x[0])


def test_posterior_saves_and_loads_whole(tmp_path):
    task = get_task("two_moons")
    theta, x = task.simulations(500)
    posterior = fit_posterior(theta, x, prior=task.prior, steps=5, **SMALL)
    posterior.save(tmp_path / "p.pt")
    loaded = load_posterior(tmp_path / "p.pt")
    assert isinstance(loaded, Posterior) and loaded.support == "transform"
    torch.manual_seed(3)
    a = posterior.sample(50, task.observations[:2])
    torch.manual_seed(3)
    b = loaded.sample(50, task.observations[:2])
    assert torch.equal(a, b)


def test_contexts_are_standardised_by_the_model():
    task = get_task("slcp")
    theta, x = task.simulations(300)
    posterior = fit_posterior(theta, x, prior=task.prior, steps=2, **SMALL)
    assert torch.allclose(posterior.model.context_scale, x.std(0), rtol=0.1)  # train split
    assert float(posterior.model.context_scale.min()) > 3.0  # SLCP observables: sd ~4.4


@pytest.mark.parametrize(
    "theta, x, kwargs, message",
    [
        (torch.randn(50, 2), torch.randn(40, 2), {}, "one row per simulation"),
        (torch.randn(5, 2), torch.randn(5, 2), {}, "at least 10 simulations"),
        (torch.full((50, 2), float("nan")), torch.randn(50, 2), {}, "theta row 0 holds NaN"),
        (torch.randn(50, 2), torch.randn(50, 2), {"prior": BoxPrior(-1, 1, dim=3)}, "3 dimensions"),
        (torch.randn(50, 2) * 5, torch.randn(50, 2), {"prior": BoxPrior(-1, 1, dim=2)}, "outside"),
        (torch.randn(50, 2), torch.randn(50, 2), {"support": "clip"}, "support must be"),
    ],
)
def test_bad_simulations_name_the_problem(theta, x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_posterior(theta, x, steps=1, **SMALL, **kwargs)


def test_bad_observations_name_the_problem():
    theta, x = torch.randn(50, 2), torch.randn(50, 3)
    posterior = fit_posterior(theta, x, steps=1, **SMALL)
    with pytest.raises(ValueError, match=r"x_obs must be \(3,\)"):
        posterior.sample(10, torch.zeros(2))
    with pytest.raises(TypeError, match="sample_shape must be"):
        posterior.sample(-1, torch.zeros(3))
    with pytest.raises(TypeError, match="sample_shape must be"):
        posterior.sample(2.5, torch.zeros(3))


def test_sample_shape_follows_torch_distributions():
    """``sample_shape`` as torch.distributions takes it, for the posterior and the priors."""
    task = get_task("two_moons")
    theta, x = task.simulations(200)
    posterior = fit_posterior(theta, x, prior=task.prior, steps=1, **SMALL)
    one, three = task.observations[0], task.observations[:3]
    for shape, lead in [(10, (10,)), ((10,), (10,)), ((2, 5), (2, 5)), (torch.Size(), ())]:
        assert posterior.sample(shape, one).shape == (*lead, 2)
        assert posterior.sample(shape, three).shape == (*lead, 3, 2)
        assert task.prior.sample(shape).shape == (*lead, 2)
    assert posterior.sample(0, three).shape == (0, 3, 2)
    assert bool(task.prior.contains(posterior.sample((4, 5), three)).all())


@pytest.mark.slow_end_to_end
def test_mle_flow_held_out_nll_stays_bounded_on_slcp_like_data():
    """The instability once seen on SLCP (held-out NLL 6 -> 3e6 while the training NLL fell):
    few simulations, a long run. Held-out NLL stays near its best."""
    task = get_task("slcp")
    theta, x = task.simulations(1200, seed=1)
    torch.manual_seed(0)
    flow = BlockAffineFlow(5, 5, transforms=3, context_features=8, hidden_features=(64, 64))
    posterior = fit_posterior(
        theta,
        x,
        model=flow,
        objective="mle",
        prior=task.prior,
        steps=1500,
        lr=1e-3,
        batch_size=128,
        val_every=50,
    )
    values = [h["val_loss"] for h in posterior.state.history if "val_loss" in h]
    # unbounded scales: 9 -> 165; bounded (models.flow.MAX_SCALE): about 9 -> 16 (overfitting
    # that the kept best weights absorb)
    assert max(values) < min(values) + 10.0, values


def test_defaults_are_the_posterior_recipe(monkeypatch):
    """Unset options take recommended_posterior_options / POSTERIOR_RECIPE; given ones win and
    None counts as unset (what the CLI passes for flags left out)."""
    import energyflow.inference.posterior as module

    configs = []
    real_fit = module.fit

    def recording_fit(model, data, *, context, config, progress):
        configs.append(config)
        return real_fit(model, data, context=context, config=config, progress=progress)

    monkeypatch.setattr(module, "fit", recording_fit)
    theta, x = torch.randn(300, 3), torch.randn(300, 2)
    saef = fit_posterior(theta, x, steps=1).model
    assert (saef.config["blocks"], saef.config["hidden_features"]) == (1, [128, 128])
    assert saef.noise_features == 3
    recipe = configs[-1]
    assert (recipe.samples_per_target, recipe.batch_size, recipe.lr, recipe.val_fraction) == (
        4,
        256,
        1e-3,
        0.1,
    )
    flow = fit_posterior(theta, x, model="affine", steps=1, batch_size=64, lr=None, blocks=2)
    assert (flow.model.config["blocks"], flow.model.config["hidden_features"]) == (2, [256, 256])
    assert (configs[-1].batch_size, configs[-1].lr) == (64, 1e-3)
