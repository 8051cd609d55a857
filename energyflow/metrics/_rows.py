"""Rows (N, D) from a tensor or an array, as every judge takes them."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray]


def as_rows(values: ArrayLike, name: str) -> Tensor:
    """``values`` as a float64 CPU tensor of shape (rows, features), finite, or a ValueError
    naming ``name``."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    tensor = tensor.detach()
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(tensor.shape)}")
    tensor = tensor.double().cpu()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} holds NaN or inf; judge finite rows only")
    return tensor


def same_features(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} has {a.shape[1]} features but {names[1]} has {b.shape[1]}")
