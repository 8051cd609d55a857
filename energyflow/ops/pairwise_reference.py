"""Pure-PyTorch reference of the pairwise power sums (docs/math.md, section 4).

These define what is correct: every fused backend is tested against them. They build every
difference x_i - y_j, a (B, N, M, D) tensor (small inputs only), so duplicates give r = 0
exactly, and take ``(r^2)^(beta/2)`` with the subgradient 0 at r = 0 (a double ``where`` keeps
every derivative finite there). Derivatives of every order come from torch autograd. Every input
is computed in float64 (which holds the squared distances of any fp32 input) and the sums are
returned in float64, as the fused ops return theirs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _powers(x: Tensor, y: Tensor, beta: float) -> Tensor:
    """(B, N, D), (B, M, D) -> (B, N, M) of ||x_i - y_j||^beta in float64, 0 where x_i = y_j."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    r2 = (x[:, :, None] - y[:, None]).square().sum(-1)
    positive = r2 > 0
    safe = torch.where(positive, r2, torch.ones_like(r2))
    return torch.where(positive, safe ** (0.5 * beta), torch.zeros_like(r2))


def cross_power_sum(
    x: Tensor, y: Tensor, x_weights: Tensor, y_weights: Tensor, beta: float
) -> Tensor:
    """S(X, Y; a, b) = sum_ij a_i b_j ||x_i - y_j||^beta.

    x (B, N, D), y (B, M, D), x_weights a (B, N), y_weights b (B, M) -> (B,) float64
    """
    a, b = x_weights.to(torch.float64), y_weights.to(torch.float64)
    return torch.einsum("bn,bnm,bm->b", a, _powers(x, y, beta), b)


def self_power_sum(y: Tensor, y_weights: Tensor, beta: float) -> Tensor:
    """S_self(Y; b) = sum_{i != j} b_i b_j ||y_i - y_j||^beta (the diagonal has r = 0).

    y (B, M, D), y_weights b (B, M) -> (B,) float64
    """
    b = y_weights.to(torch.float64)
    return torch.einsum("bn,bnm,bm->b", b, _powers(y, y, beta), b)
