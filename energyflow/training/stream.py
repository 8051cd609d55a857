"""The random stream of a run and the rows it trains on.

Step t draws its rows and noise from a generator on the device seeded with (seed, t), for the
whole global batch: a resumed run continues bit for bit (same device), and a run split over
processes (each takes its share of the rows and noise) equals the single-process run with the
same global batch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["DeviceRows", "StepStream", "VALIDATION_STEP"]

# the step whose stream validation draws from, every time (fixed noise: values compare)
VALIDATION_STEP = -1


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random stream (distinct for every (seed, step))."""
    return (seed * 1_000_003 + step + 1) % (2**63)


class StepStream:
    """Row indices and model noise of a step, drawn from its own seeded generator."""

    def __init__(self, seed: int, rows: int, device: torch.device, dtype: torch.dtype) -> None:
        self.seed, self.rows, self.device, self.dtype = seed, rows, device, dtype
        self.generator = torch.Generator(device=device)

    def draw(
        self, batch: int, step: int, noise_shape: Optional[tuple[int, ...]]
    ) -> tuple[Tensor, Optional[Tensor]]:
        """``batch`` row indices and noise of ``noise_shape`` (None: no noise) for ``step``."""
        self.generator.manual_seed(step_seed(self.seed, step))
        rows = torch.randint(self.rows, (batch,), generator=self.generator, device=self.device)
        if noise_shape is None:
            return rows, None
        noise = torch.randn(
            noise_shape, generator=self.generator, device=self.device, dtype=self.dtype
        )
        return rows, noise


class DeviceRows:
    """The training rows on the device, or in pinned host memory when too large for the GPU
    (a quarter of its free memory), fetched batch by batch."""

    def __init__(self, values: Optional[Tensor], device: torch.device) -> None:
        self.device = device
        if values is None:
            self.values = None
            return
        on_host = device.type == "cuda" and values.nbytes > torch.cuda.mem_get_info(device)[0] // 4
        self.values = values.pin_memory() if on_host else values.to(device)

    def __getitem__(self, rows: Tensor) -> Optional[Tensor]:
        if self.values is None:
            return None
        return self.values[rows.to(self.values.device)].to(self.device, non_blocking=True)
