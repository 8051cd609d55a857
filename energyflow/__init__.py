"""energyflow: likelihood-free generative models trained with the energy score.

The fused pairwise energy reductions (``pairwise_power_sum``, ``energy_score``,
``energy_distance``, ``sliced_energy_distance``) never build the N x M distance matrix; they run
on Triton (CUDA), C++ (CPU) or a pure-PyTorch reference. ``backends()`` says which are available.
"""

from energyflow.functional import (
    energy_distance,
    energy_score,
    kernel_score,
    pairwise_power_sum,
    sliced_energy_distance,
    variogram_score,
)
from energyflow.ops.dispatch import backends

__version__ = "0.1.0"
__all__ = [
    "backends",
    "energy_distance",
    "energy_score",
    "kernel_score",
    "pairwise_power_sum",
    "sliced_energy_distance",
    "variogram_score",
]
