"""A run's checkpoint: everything that resumes it bit for bit, written atomically."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from energyflow._io import atomic_save

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: Path, *, model, optimiser, average, scaler, best: Optional[dict], state, config
) -> None:
    """Model, optimiser, weight average, gradient scaler, best weights, progress (a TrainState)
    and settings, in one atomic write (the last good checkpoint survives a crash mid-write)."""
    atomic_save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "average": None if average is None else average.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "best": best,
            "state": asdict(state),
            "config": asdict(config),
        },
        path,
    )


def load_checkpoint(path: Optional[Path], device: torch.device) -> dict:
    """The payload of ``save_checkpoint``, or a ValueError if there is none at ``path``."""
    if path is None or not Path(path).exists():
        raise ValueError(f"resume=True but there is no checkpoint at {path}")
    return torch.load(path, map_location=device, weights_only=False)
