"""Energy scores and energy distances between point sets (docs/math.md, sections 2-5), and the
kernel and variogram scores that can be added to the energy score (section 2.1): the public
ops, one module each under ``energyflow.scores``.

All ops take unbatched ``(N, D)`` or batched ``(B, N, D)`` point sets and return a scalar ``()``
or ``(B,)``. ``backend`` picks the kernel: ``"auto"`` (CUDA -> Triton, CPU -> C++ if built, else
the reference), ``"triton"``, ``"cpp"`` or ``"reference"`` (pure PyTorch, builds every
difference); the kernel and variogram scores are pure PyTorch (m samples per target, m small).
Gradients flow to every floating input: points and weights.
"""

from energyflow.scores.energy import energy_distance, energy_score, pairwise_power_sum
from energyflow.scores.kernel import kernel_score
from energyflow.scores.sliced import sliced_energy_distance, sphere_mean_abs_constant
from energyflow.scores.variogram import variogram_score

__all__ = [
    "energy_distance",
    "energy_score",
    "kernel_score",
    "pairwise_power_sum",
    "sliced_energy_distance",
    "sphere_mean_abs_constant",
    "variogram_score",
]
