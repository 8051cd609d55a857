"""The learning-rate schedule of ``fit``: linear warm-up, then cosine decay to a floor.

The decay is planned as cosine segments ``[start_step, end_step, start_factor]``: a run extended
beyond its planned steps gets a new segment that starts where the schedule stood, so the rate
never climbs back up. With a wall-clock budget the schedule follows whichever is further along,
the steps or the seconds, so it ends at the budget.
"""

from __future__ import annotations

import math
from typing import Optional

# The cosine schedule decays the learning rate to this fraction of ``lr``.
MIN_LR_FRACTION = 0.02

__all__ = ["MIN_LR_FRACTION", "lr_factor", "plan_steps"]


def lr_factor(
    segments: list,
    step: int,
    *,
    warmup_steps: int = 0,
    seconds: float = 0.0,
    time_budget: Optional[float] = None,
) -> float:
    """The learning rate at ``step`` as a fraction of ``lr``: a cosine from each segment's start
    factor down to MIN_LR_FRACTION at its end (or at ``time_budget`` seconds, if that comes
    first), times a linear warm-up over the first ``warmup_steps``.

    Example:
        >>> lr_factor([[0, 100, 1.0]], 0), lr_factor([[0, 100, 1.0]], 100)
        (1.0, 0.02)
        >>> lr_factor([[0, 100, 1.0]], 0, warmup_steps=10)
        0.1
        >>> lr_factor([[0, 100, 1.0]], 10, seconds=30.0, time_budget=30.0)
        0.02
    """
    start, end, begin = next((seg for seg in reversed(segments) if seg[0] <= step), segments[0])
    progress = (step - start) / max(end - start, 1)
    if time_budget:
        progress = max(progress, seconds / time_budget)
    progress = min(max(progress, 0.0), 1.0)
    decayed = MIN_LR_FRACTION + (begin - MIN_LR_FRACTION) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )
    return decayed * min(1.0, (step + 1) / warmup_steps) if warmup_steps else decayed


def plan_steps(segments: list, done: int, steps: int) -> None:
    """Make the schedule end at ``steps``: the first plan, or an extension of a run that has
    ``done`` steps (a new segment from where the rate stands)."""
    if not segments:
        segments.append([0, steps, 1.0])
    elif steps <= done:
        raise ValueError(
            f"steps={steps} but the run has already done {done} steps; pass more steps to extend it"
        )
    elif steps != segments[-1][1]:
        segments.append([done, steps, lr_factor(segments, done)])
