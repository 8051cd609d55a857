"""Simulation-based inference with conditional energy-trained models.

from energyflow.inference import fit_posterior, get_task
from energyflow.metrics import c2st
task = get_task("two_moons")
theta, x = task.simulations(10000)
posterior = fit_posterior(theta, x, prior=task.prior, time_budget=60)
draws = posterior.sample(10000, task.observations)      # (10000, 10, 2)
c2st(draws[:, 0], task.reference_posterior(0))           # 0.5 is perfect
"""

from energyflow.inference.plots import corner_plot
from energyflow.inference.posterior import Posterior, fit_posterior, load_posterior
from energyflow.inference.priors import BoxPrior, GaussianPrior
from energyflow.inference.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "BoxPrior",
    "GaussianPrior",
    "Posterior",
    "Task",
    "corner_plot",
    "fit_posterior",
    "get_task",
    "load_posterior",
]
