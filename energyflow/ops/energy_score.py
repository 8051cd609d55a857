"""Energy scores with few samples per target: every pair of one target at once (docs/math.md, 2).

    score_b = (1/m) sum_j ||y_bj - x_b||^beta - 1/(m (m-1)) sum_{j<k} ||y_bj - y_bk||^beta

With m samples per target there are only m + m(m-1)/2 distances per target; the pairwise
row-statistics kernel would pad each target's m columns to a full tile and launch a task per
target. The direct kernel loops over targets instead, takes every distance from exact
differences, and computes the gradients with respect to samples and target in the same pass
(the backward pass only scales them), so a training step reads the samples once.
``DIRECT_SCORES`` holds the backends that have such a kernel; ``energyflow.energy_score`` uses it
for ``m <= DIRECT_MAX_SAMPLES`` and the pairwise kernels otherwise.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from energyflow.ops import dispatch, second_order, value_range
from energyflow.ops.forward_gradients import FusedFunction, save_forward_gradients
from energyflow.ops.pairwise import fold_vmap, needs_grad, scaled_outputs

# Up to this many samples per target the direct kernel is used (it beats the pairwise kernel
# there; benchmarks/results/energy_cpu.md has the energy-score grid).
DIRECT_MAX_SAMPLES = 16

Scores = Callable[[Tensor, Tensor, float, bool], tuple[Tensor, Tensor, Tensor]]


def _cpp_scores(
    samples: Tensor, target: Tensor, beta: float, want_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    acc = dispatch.accumulation_dtype(samples.dtype)
    cpp = dispatch.cpp_module()
    return tuple(cpp.energy_score_direct(samples.to(acc), target.to(acc), beta, want_grad))


# Backends with a direct kernel, by name.
DIRECT_SCORES: dict[str, Scores] = {"cpp": _cpp_scores}


def has_direct_path(backend: str, samples_per_target: int) -> bool:
    """Whether ``energy_scores`` serves this backend and m.

    Example:
        >>> has_direct_path("cpp", 2), has_direct_path("cpp", 100), has_direct_path("triton", 2)
        (True, False, False)
    """
    return backend in DIRECT_SCORES and samples_per_target <= DIRECT_MAX_SAMPLES


@torch.library.custom_op("energyflow::energy_score_direct", mutates_args=())
def _direct_kernel(
    samples: Tensor, target: Tensor, beta: float, want_grad: bool, backend: str, names: str
) -> tuple[Tensor, Tensor, Tensor]:
    """samples (B, m, D), target (B, D) -> scores (B,) in float64 and, if ``want_grad``,
    d score_b / d samples (B, m, D) and d score_b / d target (B, D) in the accumulation dtype
    (else empty tensors). Values are checked and out-of-range points rescaled here
    (``value_range``); ``names``: the public names of samples and target."""
    acc = dispatch.accumulation_dtype(samples.dtype)
    k = value_range.range_exponent((samples, target), (), names, acc)
    if k:
        samples, target = (value_range.times_power_of_two(t.to(acc), k) for t in (samples, target))
    scores, grad_samples, grad_target = DIRECT_SCORES[backend](samples, target, beta, want_grad)
    return scaled_outputs(k, beta, scores, (grad_samples, grad_target))


@_direct_kernel.register_fake
def _direct_fake(samples, target, beta, want_grad, backend, names):
    acc = dispatch.accumulation_dtype(samples.dtype)
    scores = samples.new_empty(samples.shape[:1], dtype=torch.float64)
    grad_samples = samples.new_empty(samples.shape if want_grad else (0,), dtype=acc)
    grad_target = target.new_empty(target.shape if want_grad else (0,), dtype=acc)
    return scores, grad_samples, grad_target


torch.library.register_vmap(_direct_kernel, fold_vmap(_direct_kernel, 2))


def _second_order(samples, target, cot_samples, cot_target, *, beta):
    """The energy score's double backward from cross and self terms (``ops.second_order``):
    score_b = sum_j (1/m) r(x_b, y_bj)^beta - sum_{j != k} c^2 r(y_bj, y_bk)^beta with
    c^2 = 1 / (2 m (m - 1))."""
    m = samples.shape[1]
    ones = samples.new_ones(samples.shape[:1] + (1,), dtype=torch.float64)
    per_sample = samples.new_full(samples.shape[:2], 1.0 / m, dtype=torch.float64)
    spread_weights = samples.new_full(samples.shape[:2], (2.0 * m * (m - 1)) ** -0.5)
    cot_target = None if cot_target is None else cot_target[:, None]
    to_target, (grad_target, grad_samples, _, _) = second_order.cross_second_order(
        target[:, None], samples, ones, per_sample, beta, cot_target, cot_samples, None, None
    )
    spread, (grad_spread, _) = second_order.self_second_order(
        samples, spread_weights.to(torch.float64), beta, cot_samples, None
    )
    return to_target - spread, (grad_samples - grad_spread, grad_target[:, 0])


class _EnergyScores(FusedFunction):
    @staticmethod
    def forward(samples, target, beta, want_grad, backend, names):
        return _direct_kernel(samples, target, beta, want_grad, backend, names)

    @staticmethod
    def setup_context(ctx, inputs, output):
        save_forward_gradients(ctx, inputs, output, _second_order)


def energy_scores(
    samples: Tensor, target: Tensor, beta: float, backend: str, names: str = "samples,target"
) -> Tensor:
    """Per-target energy scores (B,) in float64, by the direct kernel of ``backend`` (see
    ``has_direct_path``); samples (B, m, D), target (B, D)."""
    want_grad = needs_grad(samples, target)
    return _EnergyScores.call(samples, target, beta, want_grad, backend, names)[0]
