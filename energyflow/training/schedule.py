"""The learning-rate schedule of ``fit``: linear warm-up, then cosine decay to a floor.

The decay is planned as cosine segments ``[start_step, end_step, start_factor, start_seconds,
end_seconds]``, each end ``None`` where the run has no such limit: a segment ends at whichever
of its step and its second comes first. A run extended beyond its planned steps or budget gets
a new segment that starts where the schedule stood, so the rate never climbs back up. A time
budget is the run's length: the schedule ends at it.
"""

from __future__ import annotations

import math
from typing import Optional

# The cosine schedule decays the learning rate to this fraction of ``lr``.
MIN_LR_FRACTION = 0.02

__all__ = ["MIN_LR_FRACTION", "lr_factor", "plan_schedule"]


def lr_factor(segments: list, step: int, seconds: float = 0.0, warmup_steps: int = 0) -> float:
    """The learning rate at ``step`` and ``seconds`` as a fraction of ``lr``: a cosine from each
    segment's start factor down to MIN_LR_FRACTION at its end, times a linear warm-up over the
    first ``warmup_steps``.

    Example:
        >>> lr_factor([[0, 100, 1.0, 0.0, None]], 0), lr_factor([[0, 100, 1.0, 0.0, None]], 100)
        (1.0, 0.02)
        >>> lr_factor([[0, 100, 1.0, 0.0, None]], 0, warmup_steps=10)
        0.1
        >>> lr_factor([[0, None, 1.0, 0.0, 30.0]], 10, seconds=15.0)  # half the budget
        0.51
    """
    start, end, begin, start_seconds, end_seconds = next(
        (seg for seg in reversed(segments) if seg[0] <= step), segments[0]
    )
    progress = 0.0
    if end is not None:
        progress = (step - start) / max(end - start, 1)
    if end_seconds is not None:
        progress = max(progress, (seconds - start_seconds) / max(end_seconds - start_seconds, 1e-9))
    progress = min(max(progress, 0.0), 1.0)
    decayed = MIN_LR_FRACTION + (begin - MIN_LR_FRACTION) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )
    return decayed * min(1.0, (step + 1) / warmup_steps) if warmup_steps else decayed


def plan_schedule(
    segments: list, done: int, seconds: float, steps: Optional[int], budget: Optional[float]
) -> None:
    """Make the schedule end at ``steps`` or ``budget`` seconds (whichever comes first): the
    first plan, or an extension of a run that has done ``done`` steps in ``seconds`` (a new
    segment from where the rate stands). An extension must move a limit beyond what is done."""
    if steps is None and budget is None:
        raise ValueError("a run needs a step cap or a time budget")
    if not segments:
        segments.append([0, steps, 1.0, 0.0, budget])
        return
    last = segments[-1]
    if (last[1], last[4]) == (steps, budget):
        return  # a resumed run with its own plan
    if (steps is not None and steps <= done) or (budget is not None and budget <= seconds):
        raise ValueError(
            f"the run has done {done} steps in {seconds:.0f} s; to extend it, pass more steps "
            f"than {done} or a time budget above {seconds:.0f} s"
        )
    segments.append([done, steps, lr_factor(segments, done, seconds), seconds, budget])
