"""Gaussianising standardisation: each feature through its data's quantiles to normal units.

    T_d(x) = Phi^-1(F_d(x)),   F_d the data's CDF, piecewise linear between ``m`` quantiles

Knot j of feature d sits at the data quantile ``q_dj`` of probability ``p_j = (j + 1/2) / m``
and maps to ``Phi^-1(p_j)``; between knots T is linear, beyond the outer knots it continues
with slope ``1 / scale_d`` (the moments standardisation's), so T is a strictly increasing
bijection of the real line with a finite log-derivative everywhere. A model works in T's units;
its samples go back through ``T^-1``, which lands inside the data's range wherever the model's
output lies within the outer normal quantiles, and so reproduces the data's marginals (the
piecewise uniform levels of dequantised pixels, bounded features) without the model having to.
T is fixed, so a proper score in T's units stays proper in the data's.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_KNOTS = 1024  # quantiles kept per feature (all rows up to this many)


def fit_knots(data: Tensor, scale: Tensor, max_knots: int = MAX_KNOTS) -> tuple[Tensor, Tensor]:
    """The knots of T for ``data`` (N, D), N >= 2: data quantiles (D, m), strictly increasing
    (tied values, as in discrete features, spread upwards by 1e-6 scale a knot, so a tied value
    maps to the lowest of its knots), and their normal quantiles (m,); m = min(N, max_knots).

    Example:
        >>> x_knots, z_knots = fit_knots(torch.arange(5.0)[:, None], torch.ones(1))
        >>> x_knots.tolist(), [round(z, 3) for z in z_knots.tolist()]
        ([[0.0, 1.0, 2.0, 3.0, 4.0]], [-1.282, -0.524, 0.0, 0.524, 1.282])
    """
    rows = data.shape[0]
    m = min(rows, max_knots)
    probs = (torch.arange(m, dtype=torch.float64, device=data.device) + 0.5) / m
    ordered = data.double().sort(0).values  # (N, D)
    position = probs * rows - 0.5  # the sample quantile between order statistics
    low = position.floor().clamp(0, rows - 1).long()
    high = (low + 1).clamp(max=rows - 1)
    weight = (position - low).clamp(0, 1)[:, None]
    knots = (ordered[low] * (1 - weight) + ordered[high] * weight).t()  # (D, m)
    # strictly increasing: y_j = x_j - j delta, running max, back (leaves spaced knots alone);
    # delta: 1e-6 scale, and at least a few units in the last place of the data's dtype
    ulps = 4 * torch.finfo(data.dtype).eps * knots.abs().amax(1)
    delta = torch.maximum(1e-6 * scale.double().clamp_min(1e-12), ulps)
    step = delta[:, None] * torch.arange(m, device=data.device)
    knots = torch.cummax(knots - step, dim=1).values + step
    return knots.to(data.dtype), torch.special.ndtri(probs).to(data.dtype)


def piecewise_linear(
    x: Tensor, knots_in: Tensor, knots_out: Tensor, tail_slope: Tensor
) -> tuple[Tensor, Tensor]:
    """y = the map through the points (knots_in[d, j], knots_out[d, j]), linear between them and
    with slope ``tail_slope[d]`` beyond them, and dy/dx, both (N, D), for x (N, D) and knots
    (D, m) increasing along j."""
    columns = x.t().contiguous()  # (D, N)
    m = knots_in.shape[1]
    index = torch.searchsorted(knots_in, columns)  # 0: below the first knot, m: above the last
    segment = index.clamp(1, m - 1)
    x0, x1 = knots_in.gather(1, segment - 1), knots_in.gather(1, segment)
    y0, y1 = knots_out.gather(1, segment - 1), knots_out.gather(1, segment)
    slope = (y1 - y0) / (x1 - x0).clamp_min(torch.finfo(x.dtype).tiny)
    inside = y0 + (columns - x0) * slope
    tail = tail_slope[:, None].expand_as(columns)
    below = knots_out[:, :1] + (columns - knots_in[:, :1]) * tail
    above = knots_out[:, -1:] + (columns - knots_in[:, -1:]) * tail
    outer = torch.where(index == 0, below, above)
    is_inside = (index > 0) & (index < m)
    y = torch.where(is_inside, inside, outer)
    return y.t(), torch.where(is_inside, slope, tail).t()
