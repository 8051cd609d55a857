"""An exponential moving average of a model's weights, for sampling (Polyak averaging).

    shadow <- shadow + (1 - d_t) (weights - shadow),   d_t = min(decay, (1 + t) / (10 + t))

The ramp d_t keeps the first updates from dragging the initial weights along (t counts updates).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving average of ``model``'s parameters (buffers are the model's own).

    Example:
        >>> model = nn.Linear(2, 1)
        >>> average = WeightAverage(model, decay=0.9)
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> average.update(model)
        >>> with average.applied(model):
        ...     shifted = model.weight.clone()
        >>> bool((shifted < model.weight).all())
        True
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for average, weight in zip(self.shadow, model.parameters()):
            average.lerp_(weight.detach(), rate)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters with the average."""
        for average, weight in zip(self.shadow, model.parameters()):
            weight.copy_(average)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights in ``model``, then put its own back."""
        own = [p.detach().clone() for p in model.parameters()]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for weight, saved in zip(model.parameters(), own):
                    weight.copy_(saved)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for average, saved in zip(self.shadow, state["shadow"]):
            average.copy_(saved)
