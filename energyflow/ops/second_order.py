"""Second derivatives of the pairwise power sums: the double backward of every fused op
(docs/math.md, section 4.1).

The fused kernels give S(X, Y; a, b) = sum_ij a_i b_j r_ij^beta and its gradients. Autograd asks
a double backward for the derivatives of the scalar

    L = sum_i u_i . dS/dx_i + sum_j v_j . dS/dy_j + sum_i s_i dS/da_i + sum_j t_j dS/db_j
      = sum_ij (s_i b_j + a_i t_j) P_ij + a_i b_j Q_ij d_ij . w_ij

(u, v, s, t: the cotangents of the four gradients), with d_ij = x_i - y_j, w_ij = u_i - v_j,
r = |d|, P = r^beta, Q = beta r^(beta - 2), R = beta (beta - 2) r^(beta - 4), all three 0 at
r = 0 (the subgradient the kernels use). With c_ij = s_i b_j + a_i t_j and e_ij = a_i b_j:

    dL/dx_i =  sum_j c Q d + e (Q w + R (d . w) d),     dL/dy_j = -sum_i (the same)
    dL/da_i =  sum_j t_j P + b_j Q (d . w),             dL/db_j =  sum_i s_i P + a_i Q (d . w)

computed here in PyTorch over blocks of rows (memory O(rows x M x D) per block, never the whole
N x M x D), in float64 (which holds every fp32 input's squared distances), by differentiable ops:
a third derivative goes through torch's autograd. The self sum and the energy score are sums of
cross terms (``self_second_order``, ``ops.energy_score``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

# Elements of one block's (B, rows, M, D) pair tensors (three are alive at a time).
BLOCK_ELEMENTS = 1 << 20


def _present(t: Optional[Tensor]) -> Optional[Tensor]:
    """A cotangent in float64, or None where there is none (an empty tensor: not computed)."""
    return None if t is None or t.numel() == 0 else t.to(torch.float64)


def _powers(r2: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """P = r^beta, Q = beta r^(beta-2), R = beta (beta-2) r^(beta-4) from r^2; 0 where r = 0,
    with finite derivatives there (the inner ``where`` keeps 0^negative out of the graph)."""
    positive = r2 > 0
    safe = torch.where(positive, r2, torch.ones_like(r2))
    zero = torch.zeros_like(r2)
    p = torch.where(positive, safe ** (0.5 * beta), zero)
    q = torch.where(positive, beta * safe ** (0.5 * beta - 1.0), zero)
    r = torch.where(positive, beta * (beta - 2.0) * safe ** (0.5 * beta - 2.0), zero)
    return p, q, r


def _add(total: Optional[Tensor], part: Tensor) -> Tensor:
    return part if total is None else total + part  # out of place: the parts may be vmapped


def cross_second_order(
    x: Tensor,
    y: Tensor,
    a: Tensor,
    b: Tensor,
    beta: float,
    u: Optional[Tensor],
    v: Optional[Tensor],
    s: Optional[Tensor],
    t: Optional[Tensor],
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """L (B,) and (dL/dx, dL/dy, dL/da, dL/db) for x (B, N, D), y (B, M, D), a (B, N), b (B, M)
    and the cotangents u (B, N, D), v (B, M, D), s (B, N), t (B, M) (None or empty: zero).
    Everything in float64."""
    x, y, a, b = (z.to(torch.float64) for z in (x, y, a, b))
    u, v, s, t = (_present(z) for z in (u, v, s, t))
    batch, n_rows, dim = x.shape
    rows = max(1, BLOCK_ELEMENTS // max(1, batch * y.shape[1] * dim))
    total = grad_y = grad_b = None
    grad_x, grad_a = [], []
    for start in range(0, n_rows, rows):
        block = slice(start, start + rows)
        d = x[:, block, None] - y[:, None]  # (B, n, M, D)
        p, q, r = _powers(d.square().sum(-1), beta)  # (B, n, M)
        a_block = a[:, block, None]
        e = a_block * b[:, None]
        c = torch.zeros_like(p)
        if s is not None:
            c = c + s[:, block, None] * b[:, None]
        if t is not None:
            c = c + a_block * t[:, None]
        w = torch.zeros_like(d)
        if u is not None:
            w = w + u[:, block, None]
        if v is not None:
            w = w - v[:, None]
        dw = (d * w).sum(-1)
        total = _add(total, (c * p + e * q * dw).sum((1, 2)))
        pair = (c * q + e * r * dw)[..., None] * d + (e * q)[..., None] * w
        grad_x.append(pair.sum(2))
        grad_y = _add(grad_y, -pair.sum(1))
        weight_a = b[:, None] * q * dw + (t[:, None] * p if t is not None else 0.0)
        grad_a.append(weight_a.sum(2))
        weight_b = a_block * q * dw + (s[:, block, None] * p if s is not None else 0.0)
        grad_b = _add(grad_b, weight_b.sum(1))
    return total, (torch.cat(grad_x, 1), grad_y, torch.cat(grad_a, 1), grad_b)


def self_second_order(
    y: Tensor, b: Tensor, beta: float, v: Optional[Tensor], t: Optional[Tensor]
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """L (B,) and (dL/dy, dL/db) for the self sum S_self(Y; b) = sum_{i != j} b_i b_j r^beta
    and the cotangents v of dS/dy and t of dS/db: the cross sum of Y against itself, whose
    gradient with respect to y is the sum of its two sides' (the diagonal has r = 0)."""
    total, (gx, gy, ga, gb) = cross_second_order(y, y, b, b, beta, v, v, t, t)
    return total, (gx + gy, ga + gb)
