"""Value checks and power-of-two rescaling of every kernel entry point (docs/math.md, section 4,
"Range").

The fused kernels square distances in their accumulation dtype (fp32, or fp64 for fp64
inputs): fp32 coordinates beyond about 2^63 overflow there and subnormal ones underflow. Every
sum of ``||x_i - y_j||^beta`` is homogeneous, so a kernel entry point runs on the points scaled
by an exact power of two ``2^k`` and scales its results back, in float64:

    S(X, Y) = 2^(-beta k) S(2^k X, 2^k Y),    dS/dx = 2^((1 - beta) k) dS'/dx',
    dS/da = 2^(-beta k) dS'/da'

with ``k = 0`` whenever the largest coordinate already lies in ``SAFE_RANGE``. The checks run
inside the custom ops (on real tensors, also in a compiled graph or under ``vmap``), so NaN or
inf raise the same ``ValueError`` naming the argument everywhere.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

# Largest |coordinate| range (powers of two) in which squared distances of up to ~10^6 features,
# and the powers r^(beta - 2) of the gradients, stay finite and normal in the accumulation dtype.
SAFE_RANGE = {torch.float32: (2.0**-40, 2.0**40), torch.float64: (2.0**-400, 2.0**400)}


class NonFiniteError(ValueError):
    """An argument holds NaN or inf (a ValueError: bad input; ``fit`` reports one met in the
    model's own samples as a diverged run)."""


def largest_magnitude(tensor: Tensor) -> float:
    """max |entry| in one pass (NaN if any entry is NaN, inf if any is infinite; 0 if empty)."""
    if tensor.numel() == 0:
        return 0.0
    low, high = torch.aminmax(tensor.detach())
    return max(-float(low), float(high))


def check_finite(name: str, tensor: Tensor) -> float:
    """Raise if ``tensor`` holds NaN or inf; return its largest |entry|."""
    largest = largest_magnitude(tensor)
    if not math.isfinite(largest):
        raise NonFiniteError(f"{name} contains NaN or inf; remove or impute those entries first")
    return largest


def check_weight_values(name: str, weights: Tensor) -> None:
    """Finite and non-negative (a weight's sign decides the sign of its pairs' terms)."""
    check_finite(name, weights)
    if bool((weights < 0).any()):
        raise ValueError(f"{name} has negative entries; weights must be >= 0")


def range_exponent(
    points: Sequence[Tensor],
    weights: Sequence[Optional[Tensor]],
    names: str,
    acc: torch.dtype,
) -> int:
    """Check the values of one kernel call and return the exponent k of its rescaling.

    ``names`` holds the arguments' public names, comma-separated, points first then weights
    (as the caller's error messages name them); weights with an empty name were made by the
    caller (ones, normalised uniform weights) and are not checked. k = 0 when the largest
    coordinate lies in ``SAFE_RANGE[acc]`` (or all are 0); else the largest coordinate times
    2^k lies in [1/2, 1).
    """
    labels = names.split(",")
    largest = max(check_finite(label, t) for label, t in zip(labels, points))
    for label, w in zip(labels[len(points) :], weights):
        if w is not None and label:
            check_weight_values(label, w)
    low, high = SAFE_RANGE[acc]
    if largest == 0.0 or low <= largest <= high:
        return 0
    return -math.frexp(largest)[1]


def values_readable(*tensors: Tensor) -> bool:
    """False while torch.compile traces (fake tensors) or a torch.func transform wraps the
    tensors (``vmap`` cannot read one value of a batch): the kernels check those at run time."""
    if torch.compiler.is_compiling():
        return False
    return not any(
        t.device.type == "meta"
        or type(t).__name__ == "FakeTensor"
        or torch._C._functorch.is_functorch_wrapped_tensor(t)
        for t in tensors
    )


def check_readable(
    points: Sequence[Tensor], weights: Sequence[Optional[Tensor]], names: str
) -> None:
    """The value checks of ``range_exponent`` where values can be read (the pure-PyTorch
    reference, which computes in float64 and needs no rescaling)."""
    present = [t for t in (*points, *weights) if t is not None]
    if values_readable(*present):
        range_exponent(points, weights, names, torch.float64)


def times_power_of_two(tensor: Tensor, exponent: float) -> Tensor:
    """``tensor * 2^exponent`` in steps of about 2^60 at most, so that no factor leaves the range
    of ``tensor``'s dtype (2^150 is not an fp32 number, but 2^75 twice is); exact for an integer
    exponent (each step is then a power of two)."""
    if exponent == 0:
        return tensor
    steps = math.ceil(abs(exponent) / 60.0)
    if float(exponent).is_integer():
        part = int(exponent) // steps
        parts = [part] * (steps - 1) + [int(exponent) - part * (steps - 1)]
    else:
        parts = [exponent / steps] * steps
    for part in parts:
        tensor = tensor * 2.0**part
    return tensor
