"""Held-out rows, the best weights they pick, and early stopping."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["BestWeights", "split_validation"]


def split_validation(rows: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Row indices (train, validation) for holding out ``ceil(fraction * rows)`` rows at random
    (a permutation seeded by ``seed``; no validation rows for fraction 0).

    Example:
        >>> train, val = split_validation(10, 0.2, seed=0)
        >>> len(train), len(val), sorted(train.tolist() + val.tolist()) == list(range(10))
        (8, 2, True)
    """
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    held_out = math.ceil(fraction * rows) if fraction else 0
    return order[held_out:], order[:held_out]


class BestWeights:
    """The weights of the best validation so far, and how many validations have passed since
    (``patience`` of them without improvement end the run; 0: never)."""

    def __init__(self, patience: int, saved: Optional[dict] = None) -> None:
        self.patience = patience
        self.weights: Optional[dict] = saved

    def record(self, state, step: int, value: float, model: nn.Module) -> bool:
        """Note a validation ``value`` at ``step`` in ``state`` (a TrainState); keep ``model``'s
        weights if it is the best. Returns whether patience ran out."""
        if state.best_val is None or value < state.best_val:
            state.best_val, state.best_step, state.validations_since_best = value, step, 0
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        state.validations_since_best += 1
        return bool(self.patience) and state.validations_since_best >= self.patience
