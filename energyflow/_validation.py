"""Input checks shared by the public ops: each failure names the argument and the fix."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from energyflow.ops import value_range

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_points(name: str, points: object) -> None:
    """A floating tensor of shape (N, D) or (B, N, D) with N, D >= 1 (its values, NaN and inf,
    are checked by the kernels themselves: ``ops.value_range``)."""
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got "
            f"{points.dtype}; convert it with {name}.float()"
        )
    if points.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (N, D) or (B, N, D), got {tuple(points.shape)}")
    if (
        points.shape[-2] == 0
        or points.shape[-1] == 0
        or (points.dim() == 3 and points.shape[0] == 0)
    ):
        raise ValueError(
            f"{name} is empty (shape {tuple(points.shape)}); it needs at least one point"
        )


def check_same_kind(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Same device, dtype and feature dimension D, and a matching batch layout."""
    if a.device != b.device:
        raise ValueError(
            f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to one device"
        )
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has {b.dtype}; cast one with .to()"
        )
    if a.dim() != b.dim():
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} and {name_b} {tuple(b.shape)}: both must be "
            "unbatched (N, D) or both batched (B, N, D)"
        )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"feature dimension mismatch: {name_a} has D={a.shape[-1]}, {name_b} has "
            f"D={b.shape[-1]}"
        )
    if a.dim() == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch size mismatch: {name_a} has B={a.shape[0]}, {name_b} has B={b.shape[0]}"
        )


def check_beta(beta: object) -> float:
    """beta as a float in (0, 2]: any real number type (Python, NumPy, a 0-d tensor's item)."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a float in (0, 2], got {type(beta).__name__}")
    beta = float(beta)
    if not (0.0 < beta <= 2.0):
        raise ValueError(
            f"beta must lie in (0, 2] (the energy score is proper only there), got {beta}"
        )
    return beta


def check_positive(name: str, value: object, high: float = math.inf) -> float:
    """``value`` as a float in (0, high] (finite): any real number type, as for beta."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (0.0 < value <= high and math.isfinite(value)):
        limit = "a positive finite number" if high == math.inf else f"in (0, {high:g}]"
        raise ValueError(f"{name} must be {limit}, got {value}")
    return value


def check_weights(
    name: str, weights: Optional[Tensor], points: Tensor, points_name: str
) -> Optional[Tensor]:
    """Weights of shape points.shape[:-1] on the points' device, in their dtype. Where values
    can be read (eager mode): finite, non-negative, with a positive finite sum per batch entry
    (the kernels check finiteness and signs again at run time, also when compiled)."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(weights).__name__}")
    if not weights.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {weights.dtype}")
    expected = tuple(points.shape[:-1])
    if tuple(weights.shape) != expected:
        raise ValueError(
            f"{name} must have shape {expected} (one weight per point of {points_name}), got "
            f"{tuple(weights.shape)}"
        )
    if weights.device != points.device:
        raise ValueError(f"{name} is on {weights.device} but {points_name} is on {points.device}")
    if value_range.values_readable(weights):
        value_range.check_weight_values(name, weights)
        totals = weights.sum(-1)
        if not bool(torch.isfinite(totals).all()):
            raise ValueError(
                f"{name} sum to inf in {weights.dtype}; divide them by a common factor "
                "(only their ratios matter to the energy distance) or use float64"
            )
        if not bool((totals > 0).all()):
            raise ValueError(f"{name} must sum to a positive number (per batch entry)")
    return weights.to(points.dtype)


def check_choice(name: str, value: object, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]
