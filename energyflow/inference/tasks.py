"""Simulation-based-inference tasks with reference posteriors (definitions as in sbibm).

Each ``Task`` has a prior, a simulator ``x ~ p(x | theta)``, ten fixed observations (drawn from
the prior and the simulator with a fixed seed) and a reference posterior sampler for each:

  gaussian_linear  theta ~ N(0, 0.1 I_10), x ~ N(theta, 0.1 I_10). Analytic posterior:
                   N(x / 2, 0.05 I).
  two_moons        theta ~ U(-1, 1)^2; a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2),
                   x = (r cos a + 0.25, r sin a) + (-|t1 + t2| / sqrt 2, (t2 - t1) / sqrt 2).
                   Exact posterior: the map theta -> x - p is linear on each side of t1 + t2 = 0
                   with the same |Jacobian|, so a draw of (a, r) solved for theta on a random side
                   and kept if inside the prior box is an exact posterior draw.
  slcp             theta ~ U(-3, 3)^5; x = 4 draws of N((t1, t2), S), S = [[s1^2, r s1 s2],
                   [r s1 s2, s2^2]], s1 = t3^2, s2 = t4^2, r = tanh(t5): 8 observables. Reference
                   by MCMC (``slcp_reference_mcmc``), generated once by
                   benchmarks/make_references.py (two independent chain groups must agree) and
                   shipped compressed in ``references/slcp.npz``.
  squares          (multimodal) theta ~ U(-2, 2)^2, x ~ N(theta^2, 0.1^2 I): up to four modes
                   (the signs of theta). Exact posterior per coordinate by inverse CDF on a fine
                   grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from energyflow.inference.priors import BoxPrior, GaussianPrior, Prior

__all__ = ["TASKS", "Task", "get_task", "slcp_reference_mcmc"]

OBSERVATIONS = 10
REFERENCES = Path(__file__).with_name("references")


@dataclass
class Task:
    """A simulator with a prior, fixed observations and their reference posteriors."""

    name: str
    prior: Prior
    simulate: Callable[[Tensor, torch.Generator], Tensor]
    reference: Callable[["Task", int, int, torch.Generator], Tensor]
    seed: int
    _observed: Optional[tuple[Tensor, Tensor]] = field(default=None, repr=False)

    def simulations(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` pairs (theta (n, D), x (n, C)) from the prior and the simulator."""
        if n < 1:
            raise ValueError(f"the number of simulations must be >= 1, got {n}")
        generator = torch.Generator().manual_seed(seed)
        theta = self.prior.sample(n, generator)
        return theta, self.simulate(theta, generator)

    def _observations(self) -> tuple[Tensor, Tensor]:
        if self._observed is None:
            generator = torch.Generator().manual_seed(self.seed)
            theta = self.prior.sample(OBSERVATIONS, generator)
            self._observed = (theta, self.simulate(theta, generator))
        return self._observed

    @property
    def observations(self) -> Tensor:
        """The ten observations (10, C)."""
        return self._observations()[1]

    @property
    def true_parameters(self) -> Tensor:
        """The parameters that generated them (10, D)."""
        return self._observations()[0]

    def reference_posterior(self, index: int, n: int = 10000, seed: int = 0) -> Tensor:
        """``n`` draws (n, D) from the reference posterior of observation ``index`` (0-9)."""
        if not 0 <= index < OBSERVATIONS:
            raise ValueError(f"observation index must be in 0..{OBSERVATIONS - 1}, got {index}")
        return self.reference(self, index, n, torch.Generator().manual_seed(seed))


# ---- gaussian_linear ---------------------------------------------------------------------------
def _gaussian_linear_simulate(theta: Tensor, generator: torch.Generator) -> Tensor:
    return theta + math.sqrt(0.1) * torch.randn(theta.shape, generator=generator)


def _gaussian_linear_reference(task: Task, index: int, n: int, generator) -> Tensor:
    x = task.observations[index]
    return x / 2 + math.sqrt(0.05) * torch.randn(n, len(x), generator=generator)


# ---- two_moons ---------------------------------------------------------------------------------
def _moon_noise(n: int, generator: torch.Generator) -> Tensor:
    a = (torch.rand(n, generator=generator) - 0.5) * math.pi
    r = 0.1 + 0.01 * torch.randn(n, generator=generator)
    return torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], dim=-1)


def _two_moons_simulate(theta: Tensor, generator: torch.Generator) -> Tensor:
    shift = torch.stack(
        [
            -(theta[:, 0] + theta[:, 1]).abs() / math.sqrt(2),
            (theta[:, 1] - theta[:, 0]) / math.sqrt(2),
        ],
        dim=-1,
    )
    return _moon_noise(len(theta), generator) + shift


def _two_moons_reference(task: Task, index: int, n: int, generator) -> Tensor:
    x = task.observations[index]
    kept: list[Tensor] = []
    while sum(len(k) for k in kept) < n:
        q = x - _moon_noise(4 * n, generator)  # = (-|t1 + t2| / sqrt 2, (t2 - t1) / sqrt 2)
        total = -math.sqrt(2) * q[:, 0]  # |t1 + t2|, must be >= 0
        side = torch.where(torch.rand(len(q), generator=generator) < 0.5, -1.0, 1.0)
        s, d = side * total, math.sqrt(2) * q[:, 1]
        theta = torch.stack([(s - d) / 2, (s + d) / 2], dim=-1)
        kept.append(theta[(total >= 0) & task.prior.contains(theta)])
    return torch.cat(kept)[:n]


# ---- slcp --------------------------------------------------------------------------------------
def _slcp_moments(theta: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (.., 2) and covariance (.., 2, 2) of one SLCP draw."""
    s1, s2, rho = theta[..., 2] ** 2, theta[..., 3] ** 2, torch.tanh(theta[..., 4])
    cov = torch.stack(
        [torch.stack([s1**2, rho * s1 * s2], -1), torch.stack([rho * s1 * s2, s2**2], -1)], -2
    )
    return theta[..., :2], cov


def _slcp_simulate(theta: Tensor, generator: torch.Generator) -> Tensor:
    mean, cov = _slcp_moments(theta.double())
    jitter = 1e-9 * torch.eye(2, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov + jitter)
    z = torch.randn(len(theta), 4, 2, generator=generator, dtype=torch.float64)
    draws = mean[:, None, :] + torch.einsum("nij,nkj->nki", chol, z)
    return draws.reshape(len(theta), 8).to(theta.dtype)


def slcp_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    """log p(x | theta) of SLCP: theta (..., 5), x (8,) -> (...)."""
    mean, cov = _slcp_moments(theta)
    cov = cov + 1e-9 * torch.eye(2, dtype=cov.dtype)
    normal = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    draws = x.reshape(4, 2).to(theta.dtype)
    return sum(normal.log_prob(draws[j]) for j in range(4))


def slcp_reference_mcmc(
    x: Tensor, n: int, generator: torch.Generator, *, chains: int = 1000, burn_in: int = 1000
) -> Tensor:
    """Posterior draws of SLCP at x (8,) by random-walk Metropolis in fp64.

    Chains start from prior draws resampled by their likelihood (so every mode gets chains in
    proportion to its mass), adapt their step size during burn-in towards 25-35% acceptance,
    then keep every 10th state. The likelihood depends on t3, t4 only through their squares, so
    each kept draw gets random signs for t3 and t4 (the four symmetric modes, exactly)."""
    prior = BoxPrior(-3.0, 3.0, dim=5)
    candidates = prior.sample(200_000, generator).double()
    weights = torch.softmax(slcp_log_likelihood(candidates, x.double()), 0)
    state = candidates[torch.multinomial(weights, chains, replacement=True, generator=generator)]
    state[:, 2:4] = state[:, 2:4].abs()
    log_post = slcp_log_likelihood(state, x.double())
    step = torch.full((chains, 1), 0.1, dtype=torch.float64)
    kept, thin = [], 10
    total = burn_in + thin * math.ceil(n / chains)
    for t in range(total):
        proposal = state + step * torch.randn(state.shape, generator=generator, dtype=torch.float64)
        proposal[:, 2:4] = proposal[:, 2:4].abs()  # folded onto t3, t4 >= 0 (symmetric moves)
        inside = prior.contains(proposal)
        value = torch.where(
            inside, slcp_log_likelihood(proposal.clamp(-3, 3), x.double()), -math.inf
        )
        accept = (
            torch.rand(chains, generator=generator, dtype=torch.float64).log() < value - log_post
        )
        state = torch.where(accept[:, None], proposal, state)
        log_post = torch.where(accept, value, log_post)
        if t < burn_in:
            step = step * torch.where(accept[:, None], 1.02, 0.99)
        elif (t - burn_in) % thin == 0:
            kept.append(state.clone())
    draws = torch.cat(kept)[:n]
    signs = torch.where(torch.rand(len(draws), 2, generator=generator) < 0.5, -1.0, 1.0)
    draws[:, 2:4] = draws[:, 2:4] * signs.double()
    return draws.float()


def _slcp_reference(task: Task, index: int, n: int, generator) -> Tensor:
    path = REFERENCES / "slcp.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; generate it with `python benchmarks/make_references.py`"
        )
    stored = torch.as_tensor(np.load(path)["samples"][index])
    if n > len(stored):
        raise ValueError(f"the stored SLCP reference holds {len(stored)} draws; asked for {n}")
    return stored[torch.randperm(len(stored), generator=generator)[:n]]


# ---- squares (multimodal) ----------------------------------------------------------------------
_SQUARES_NOISE = 0.1


def _squares_simulate(theta: Tensor, generator: torch.Generator) -> Tensor:
    return theta**2 + _SQUARES_NOISE * torch.randn(theta.shape, generator=generator)


def _squares_reference(task: Task, index: int, n: int, generator) -> Tensor:
    x = task.observations[index].double()
    grid = torch.linspace(-2.0, 2.0, 200_001, dtype=torch.float64)
    columns = []
    for value in x:  # the coordinates are independent a posteriori
        log_density = -0.5 * ((value - grid**2) / _SQUARES_NOISE) ** 2
        cdf = torch.cumsum(torch.exp(log_density - log_density.max()), 0)
        cdf = cdf / cdf[-1]
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        columns.append(grid[torch.searchsorted(cdf, u).clamp(max=len(grid) - 1)])
    return torch.stack(columns, -1).float()


TASKS: dict[str, Callable[[], Task]] = {
    "gaussian_linear": lambda: Task(
        "gaussian_linear",
        GaussianPrior(0.0, math.sqrt(0.1), dim=10),
        _gaussian_linear_simulate,
        _gaussian_linear_reference,
        seed=101,
    ),
    "two_moons": lambda: Task(
        "two_moons", BoxPrior(-1.0, 1.0, dim=2), _two_moons_simulate, _two_moons_reference, seed=102
    ),
    "slcp": lambda: Task(
        "slcp", BoxPrior(-3.0, 3.0, dim=5), _slcp_simulate, _slcp_reference, seed=103
    ),
    "squares": lambda: Task(
        "squares", BoxPrior(-2.0, 2.0, dim=2), _squares_simulate, _squares_reference, seed=104
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name`` (one of ``TASKS``).

    Example:
        >>> task = get_task("gaussian_linear")
        >>> theta, x = task.simulations(100)
        >>> theta.shape, x.shape, task.observations.shape
        (torch.Size([100, 10]), torch.Size([100, 10]), torch.Size([10, 10]))
    """
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name]()
