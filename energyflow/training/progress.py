"""The progress bar of a run: elapsed against the time budget when there is one (with the steps
beside it), else steps against the step cap."""

from __future__ import annotations

from typing import Optional

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """``update(step, seconds, **shown)`` after each step; ``close()`` at the end."""

    def __init__(
        self,
        steps: Optional[int],
        budget: Optional[float],
        step: int,
        seconds: float,
        shown: bool,
        file=None,
    ) -> None:
        self.by_time = budget is not None and (steps is None or steps > 10**7)
        total = budget if self.by_time else steps
        self.bar = tqdm(
            total=total,
            initial=seconds if self.by_time else step,
            desc="training",
            unit="s" if self.by_time else "step",
            bar_format=(
                "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}"
                if self.by_time
                else None
            ),
            disable=not shown,
            mininterval=0.5,
            file=file,
        )

    def update(self, step: int, seconds: float, **shown: str) -> None:
        if self.by_time:
            value, shown = min(seconds, self.bar.total), {"step": str(step), **shown}
        else:
            value = step
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(value - self.bar.n)

    def close(self) -> None:
        self.bar.close()
