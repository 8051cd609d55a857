"""Likelihoods: exact for models with a density, estimated by a KDE for implicit generators
(an estimate biased by the bandwidth; label it so)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from energyflow.metrics._rows import ArrayLike, as_rows

__all__ = ["kde_log_likelihood", "log_likelihood"]


def kde_log_likelihood(
    samples: ArrayLike, data: ArrayLike, *, bandwidth: Optional[float] = None
) -> float:
    """Estimated mean log-likelihood of ``data`` under a Gaussian KDE of ``samples`` (Scott's
    bandwidth per standardised feature unless given). An estimate, not the model's density."""
    s, d = as_rows(samples, "samples"), as_rows(data, "data")
    loc, scale = s.mean(0), s.std(0).clamp_min(1e-12)
    s, d = (s - loc) / scale, (d - loc) / scale
    n, dim = s.shape
    h = bandwidth or n ** (-1.0 / (dim + 4))
    total = []
    for chunk in d.split(1024):
        sq = torch.cdist(chunk, s).square() / (2 * h * h)
        log_kernel = (
            torch.logsumexp(-sq, dim=1)
            - math.log(n)
            - dim * math.log(h)
            - 0.5 * dim * math.log(2 * math.pi)
        )
        total.append(log_kernel)
    return float(torch.cat(total).mean() - scale.log().sum())


def log_likelihood(model, data: ArrayLike, context: Optional[ArrayLike] = None) -> float:
    """Exact mean log-likelihood of ``data`` under a model with a density (raises otherwise)."""
    x = as_rows(data, "data").to(model.loc.device, model.loc.dtype)
    c = (
        None
        if context is None
        else as_rows(context, "context").to(model.loc.device, model.loc.dtype)
    )
    with torch.no_grad():
        if c is None:
            values = [model.log_prob(xb) for xb in x.split(4096)]
        else:
            values = [model.log_prob(xb, cb) for xb, cb in zip(x.split(4096), c.split(4096))]
    return float(torch.cat(values).mean())
