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

from energyflow.ops import dispatch
from energyflow.ops.pairwise import scale_forward_gradient

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
def _direct_op(
    samples: Tensor, target: Tensor, beta: float, want_grad: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """samples (B, m, D), target (B, D) -> scores (B,) and, if ``want_grad``, d score_b /
    d samples (B, m, D) and d score_b / d target (B, D) (else empty tensors); all in the
    accumulation dtype."""
    return DIRECT_SCORES[backend](samples, target, beta, want_grad)


@_direct_op.register_fake
def _direct_fake(samples, target, beta, want_grad, backend):
    acc = dispatch.accumulation_dtype(samples.dtype)
    scores = samples.new_empty(samples.shape[:1], dtype=acc)
    grad_samples = samples.new_empty(samples.shape if want_grad else (0,), dtype=acc)
    grad_target = target.new_empty(target.shape if want_grad else (0,), dtype=acc)
    return scores, grad_samples, grad_target


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:2], *output[1:])


def _backward(ctx, grad_scores, _grad_samples_out, _grad_target_out):
    samples, target, grad_samples, grad_target = ctx.saved_tensors
    need = ctx.needs_input_grad
    return (
        scale_forward_gradient(grad_scores, grad_samples, samples, need[0]),
        scale_forward_gradient(grad_scores, grad_target, target, need[1]),
        None,
        None,
        None,
    )


_direct_op.register_autograd(_backward, setup_context=_setup)


def energy_scores(samples: Tensor, target: Tensor, beta: float, backend: str) -> Tensor:
    """Per-target energy scores (B,) in the accumulation dtype, by the direct kernel of
    ``backend`` (see ``has_direct_path``); samples (B, m, D), target (B, D), validated."""
    want_grad = torch.is_grad_enabled() and (samples.requires_grad or target.requires_grad)
    scores, _, _ = _direct_op(samples, target, beta, want_grad, backend)
    return scores
