"""Tasks, priors and reference posteriors: the references agree with importance sampling from
the prior weighted by the likelihood (two moons, squares), the analytic formula (Gaussian-linear)
and the MCMC checks (SLCP, stored)."""

from __future__ import annotations

import math

import pytest
import torch

from energyflow.inference import BoxPrior, GaussianPrior, get_task
from energyflow.inference.tasks import slcp_log_likelihood


def _weighted_moments(theta: torch.Tensor, log_weights: torch.Tensor):
    w = torch.softmax(log_weights.double(), 0)[:, None]
    mean = (w * theta).sum(0)
    return mean, (w * (theta - mean) ** 2).sum(0).sqrt()


def _two_moons_log_likelihood(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    shift = torch.stack(
        [
            -(theta[:, 0] + theta[:, 1]).abs() / math.sqrt(2),
            (theta[:, 1] - theta[:, 0]) / math.sqrt(2),
        ],
        -1,
    )
    q = x - shift - torch.tensor([0.25, 0.0], dtype=theta.dtype)
    r = q.norm(dim=-1)
    log_r = -0.5 * ((r - 0.1) / 0.01) ** 2 - math.log(0.01 * math.sqrt(2 * math.pi))
    value = log_r - math.log(math.pi) - r.log()
    return torch.where(q[:, 0] > 0, value, torch.full_like(value, -math.inf))


@pytest.mark.parametrize("name", ["two_moons", "squares"])
def test_exact_references_match_importance_sampling(name):
    task = get_task(name)
    proposals = task.prior.sample(400_000, torch.Generator().manual_seed(5)).double()
    for index in (0, 3):
        x = task.observations[index].double()
        if name == "two_moons":
            log_w = _two_moons_log_likelihood(proposals, x)
        else:
            log_w = (-0.5 * ((x - proposals**2) / 0.1) ** 2).sum(-1)
        # squares: the signs are symmetric modes whose importance weights fluctuate; compare |theta|
        folded = (lambda t: t.abs()) if name == "squares" else (lambda t: t)
        mean, sd = _weighted_moments(folded(proposals), log_w)
        draws = task.reference_posterior(index, 20000).double()
        reference = folded(draws)
        assert torch.allclose(reference.mean(0), mean, atol=0.03), (reference.mean(0), mean)
        assert torch.allclose(reference.std(0), sd, atol=0.03), (reference.std(0), sd)
        assert bool(task.prior.contains(draws).all())


def test_gaussian_linear_reference_is_the_analytic_posterior():
    task = get_task("gaussian_linear")
    x = task.observations[2]
    draws = task.reference_posterior(2, 50000)
    assert torch.allclose(draws.mean(0), x / 2, atol=0.01)
    assert torch.allclose(draws.std(0), torch.full((10,), math.sqrt(0.05)), atol=0.01)
    # the simulator is what the analytic posterior assumes: x - theta ~ N(0, 0.1)
    theta, sims = task.simulations(50000, seed=3)
    assert abs(float((sims - theta).var()) - 0.1) < 0.003 and abs(float(theta.var()) - 0.1) < 0.003


def test_stored_slcp_reference_is_in_the_prior_and_explains_the_data():
    task = get_task("slcp")
    for index in (0, 7):
        draws = task.reference_posterior(index, 5000)
        assert draws.shape == (5000, 5) and bool(task.prior.contains(draws).all())
        x = task.observations[index].double()
        prior_draws = task.prior.sample(5000, torch.Generator().manual_seed(0)).double()
        assert slcp_log_likelihood(draws.double(), x).median() > slcp_log_likelihood(
            prior_draws, x
        ).quantile(0.99)
        # t3 and t4 enter through their squares: both signs equally often
        assert abs(float((draws[:, 2:4] > 0).double().mean()) - 0.5) < 0.03


def test_tasks_are_fixed_and_checked():
    first, second = get_task("two_moons"), get_task("two_moons")
    assert torch.equal(first.observations, second.observations)
    assert first.observations.shape == (10, 2) and first.true_parameters.shape == (10, 2)
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("nope")
    with pytest.raises(ValueError, match="observation index"):
        first.reference_posterior(10)
    with pytest.raises(ValueError, match="simulations must be >= 1"):
        first.simulations(0)


def test_box_prior_transform_and_its_jacobian():
    prior = BoxPrior(torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 10.0]))
    u = torch.randn(7, 2, dtype=torch.float64)
    theta = prior.constrain(u)
    assert bool(prior.contains(theta).all())
    assert torch.allclose(prior.unconstrain(theta), u, atol=1e-6)
    jacobian = torch.autograd.functional.jacobian(lambda v: prior.constrain(v).sum(0), u)
    diagonal = torch.stack([jacobian[i, :, i] for i in range(2)], -1)
    assert torch.allclose(prior.log_abs_det_constrain(u), diagonal.log().sum(-1))
    assert prior.log_prob(torch.tensor([[4.0, 1.0]])).item() == -math.inf
    with pytest.raises(ValueError, match="high > low"):
        BoxPrior(1.0, 1.0, dim=2)
    with pytest.raises(ValueError, match="scale must be > 0"):
        GaussianPrior(0.0, -1.0, dim=2)
