"""Where and in what precision ``fit`` runs: device names, autocast, gradient scaling.

    device:    "auto" (CUDA if available, under torchrun the local rank's GPU), "cpu", "cuda[:i]"
    precision: "fp32"; "bf16" (autocast); "fp16" (autocast + a GradScaler)

Under autocast the networks run in the low precision; the energy kernels accumulate in fp32 and
the loss is computed and returned in fp32 (the model's dtype).
"""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Optional

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["PRECISIONS", "autocast", "grad_scaler", "resolve_device"]


def resolve_device(device: "str | torch.device") -> torch.device:
    """The torch.device a ``device`` setting names, checked to exist.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}"
        )
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return resolved


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if _check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for fp16 (whose small range underflows gradients), else None."""
    return torch.amp.GradScaler(device.type) if _check_precision(precision) == "fp16" else None
