"""What the public scores share: argument checks in their public names, the batch and weight
conventions, the autocast declaration, the float64 combination and its one rounding."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from energyflow._validation import check_choice, check_points, check_same_kind, check_weights
from energyflow.ops import dispatch, value_range


def batched(t: Optional[Tensor], dims: int) -> Optional[Tensor]:
    """Add the leading batch dim to an unbatched tensor (None stays None)."""
    if t is None or t.dim() == dims:
        return t
    return t.unsqueeze(0)


def ones_like_rows(points: Tensor) -> Tensor:
    return torch.ones(points.shape[:-1], dtype=points.dtype, device=points.device)


def fp32_under_autocast(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Declare an op's autocast behaviour: like ``torch.cdist``, it computes in float32 under
    ``torch.autocast`` (its fp16/bf16 tensor arguments are cast to fp32 and autocast is off
    inside, so no einsum of it runs in half precision); outside autocast it is unchanged."""

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        if not (
            torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
        ):
            return op(*args, **kwargs)

        def cast(value):
            half = isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16)
            return value.float() if half else value

        with torch.autocast(device_type, enabled=False):
            return op(*map(cast, args), **{key: cast(v) for key, v in kwargs.items()})

    return wrapper


def kernel_names(*points: str, **weights: Optional[Tensor]) -> str:
    """The names a kernel's errors use: the points', then each user-given weights' (an empty
    name for weights the op made itself, which the kernel does not check again)."""
    return ",".join([*points, *(name if w is not None else "" for name, w in weights.items())])


def representable(value: Tensor, dtype: torch.dtype, op: str) -> Tensor:
    """``value`` (float64) in ``dtype``; a ValueError where (readably) a finite value does not
    fit, rather than a silent inf: the fp32 result of fp32 points near 3e38 can exceed fp32."""
    out = value.to(dtype)
    if value_range.values_readable(value) and not bool(torch.isfinite(out).all()):
        largest = float(value.detach().abs().max())
        raise ValueError(
            f"{op}: the result ({largest:.3g}) exceeds the range of {dtype}; "
            "pass float64 inputs, or rescale the points (the result scales by s^beta)"
        )
    return out


def check_two_sets(
    x: Tensor, y: Tensor, x_weights: Optional[Tensor], y_weights: Optional[Tensor]
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Validate two point sets and their weights; returns the weights in the points' dtype."""
    check_points("x", x)
    check_points("y", y)
    check_same_kind("x", x, "y", y)
    return (
        check_weights("x_weights", x_weights, x, "x"),
        check_weights("y_weights", y_weights, y, "y"),
    )


def check_scored(
    score: str, samples: Tensor, target: Tensor, weights: Optional[Tensor], reduction: str
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Validate the arguments of a scoring rule of ``m`` samples per target; returns samples
    (B, m, D), target (B, 1, D) and the weights (B,) in float64."""
    check_points("samples", samples)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != samples.dim() - 1:
        raise ValueError(
            f"target must have shape {tuple(samples.shape[:-2]) + (samples.shape[-1],)} for "
            f"samples of shape {tuple(samples.shape)} (samples (B, m, D) with target (B, D), "
            f"or (m, D) with (D,)), got {tuple(target.shape)}"
        )
    if samples.shape[-2] < 2:
        raise ValueError(
            f"the {score} needs m >= 2 samples per target, got m={samples.shape[-2]} "
            f"(samples shape {tuple(samples.shape)})"
        )
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    samples3 = batched(samples, 3)
    target3 = target.reshape(-1, 1, target.shape[-1]) if target.dim() >= 1 else target
    check_points("target", target3)
    check_same_kind("target", target3, "samples", samples3)
    if weights is not None:
        weights = check_weights("weights", weights, target, "target").reshape(-1)
        weights = weights.to(torch.float64)
    return samples3, target3, weights


def reduced(scores: Tensor, weights: Optional[Tensor], reduction: str, unbatched: bool) -> Tensor:
    """Per-target scores (B,) weighted and reduced as the scoring rules' ``reduction`` says."""
    if weights is not None:
        scores = scores * weights
    if reduction == "none":
        return scores[0] if unbatched else scores
    total = scores.sum()
    if reduction == "sum":
        return total
    return total / (weights.sum() if weights is not None else scores.shape[0])


def mean_over_distinct_pairs(values: Tensor) -> Tensor:
    """(B, m, m, ...) -> (B, ...): the mean over the m (m - 1) ordered pairs j != k."""
    m = values.shape[1]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=values.device)
    shape = (1, m, m) + (1,) * (values.dim() - 3)
    return (values * off_diagonal.reshape(shape)).sum((1, 2)) / (m * (m - 1))


def in_working_dtype(*points: Tensor, names: str) -> tuple[Tensor, ...]:
    """The points of a pure-PyTorch op in the dtype it computes in: the accumulation dtype, or
    float64 where their values lie outside its safe range (``ops.value_range``: squares of fp32
    coordinates beyond 2^63 overflow). Values are checked (NaN, inf) where they can be read:
    under torch.compile or vmap these ops skip the checks, the fused ops do not."""
    work = dispatch.accumulation_dtype(points[0].dtype)
    if value_range.values_readable(*points):
        if value_range.range_exponent(points, (), names, work) != 0:
            work = torch.float64
    return tuple(p.to(work) for p in points)


def normalised(weights: Optional[Tensor], points: Tensor) -> Tensor:
    """Weights summing to 1, in the accumulation dtype (1/300 in bf16 is 0.2% off, and the
    energy distance's terms would not share that error)."""
    acc = dispatch.accumulation_dtype(points.dtype)
    if weights is None:
        return points.new_full(points.shape[:-1], 1.0 / points.shape[-2], dtype=acc)
    weights = weights.to(acc)
    return weights / weights.sum(-1, keepdim=True)


def is_uniform(weights: Tensor) -> bool:
    return bool((weights == weights[..., :1]).all())
