"""Pure-PyTorch reference of the pairwise power sums (docs/math.md, section 4).

These define what is correct: every fused backend is tested against them. They build the full
(B, N, M) distance matrix with exact differences (``torch.cdist`` without the matrix-product
shortcut), so duplicates give r = 0 exactly, and take ``r**beta`` with the subgradient 0 at r = 0
(a double ``where`` keeps the gradient finite there). Gradients come from torch autograd.
fp16/bf16 inputs are computed in fp32, and the sums returned in fp32 (as the fused ops do).
"""

from __future__ import annotations

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def _distances(x: Tensor, y: Tensor) -> Tensor:
    """(B, N, D), (B, M, D) -> (B, N, M) Euclidean distances from exact differences."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def _power(r: Tensor, beta: float) -> Tensor:
    """r**beta with value and gradient 0 where r == 0."""
    positive = r > 0
    return torch.where(
        positive, torch.where(positive, r, torch.ones_like(r)) ** beta, torch.zeros_like(r)
    )


def _upcast(*tensors: Tensor) -> list[Tensor]:
    return [t.float() if t.dtype in _HALF else t for t in tensors]


def cross_power_sum(
    x: Tensor, y: Tensor, x_weights: Tensor, y_weights: Tensor, beta: float
) -> Tensor:
    """S(X, Y; a, b) = sum_ij a_i b_j ||x_i - y_j||^beta.

    x (B, N, D), y (B, M, D), x_weights a (B, N), y_weights b (B, M) -> (B,)
    """
    x, y, x_weights, y_weights = _upcast(x, y, x_weights, y_weights)
    kernel = _power(_distances(x, y), beta)
    return torch.einsum("bn,bnm,bm->b", x_weights, kernel, y_weights)


def self_power_sum(y: Tensor, y_weights: Tensor, beta: float) -> Tensor:
    """S_self(Y; b) = sum_{i != j} b_i b_j ||y_i - y_j||^beta.

    y (B, M, D), y_weights b (B, M) -> (B,)
    """
    y, y_weights = _upcast(y, y_weights)
    kernel = _power(_distances(y, y), beta)
    off_diagonal = ~torch.eye(y.shape[1], dtype=torch.bool, device=y.device)
    kernel = kernel * off_diagonal
    return torch.einsum("bn,bnm,bm->b", y_weights, kernel, y_weights)
