"""Priors over parameters theta, and the map that makes a bounded prior's support all of R^D.

    BoxPrior(low, high):     uniform on the box; ``unconstrain`` maps it to R^D by
                             u = logit((theta - low) / (high - low))
    GaussianPrior(loc, scale): independent normals (already unbounded)

A posterior model trained on u and mapped back with ``constrain`` (low + (high - low) sigmoid(u))
can only return samples inside the box; its density picks up the Jacobian
log |d theta / d u| = sum log((high - low) sigmoid(u) (1 - sigmoid(u))).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["BoxPrior", "GaussianPrior", "Prior", "as_sample_shape"]

SampleShape = Union[int, tuple[int, ...], list[int], torch.Size]

_EDGE = 1e-6  # fractions of the box kept this far from its faces before the logit


def _parameter_pair(
    names: tuple[str, str], first, second, dim: Optional[int]
) -> tuple[Tensor, Tensor]:
    """Two (D,) float tensors from numbers or tensors (scalars broadcast to ``dim``)."""
    a, b = (torch.as_tensor(v, dtype=torch.float32) for v in (first, second))
    if dim is not None:
        a, b = a.expand(dim).clone(), b.expand(dim).clone()
    if a.dim() != 1 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be (D,) alike, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return a, b


def as_sample_shape(sample_shape: SampleShape) -> torch.Size:
    """``sample_shape`` as torch.distributions takes it (an int n means ``(n,)``).

    Example:
        >>> as_sample_shape(5), as_sample_shape((2, 3)), as_sample_shape(torch.Size())
        (torch.Size([5]), torch.Size([2, 3]), torch.Size([]))
    """
    shape = (sample_shape,) if isinstance(sample_shape, int) else sample_shape
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise TypeError(
            f"sample_shape must be an int or a tuple of non-negative ints (a torch.Size), got "
            f"{sample_shape!r}"
        )
    return torch.Size(shape)


class BoxPrior:
    """Uniform prior on the box [low, high] (each (D,)).

    Example:
        >>> prior = BoxPrior(-torch.ones(2), torch.ones(2))
        >>> theta = prior.sample(5, generator=torch.Generator().manual_seed(0))
        >>> bool(prior.contains(theta).all()), round(prior.log_prob(theta)[0].item(), 5)
        (True, -1.38629)
        >>> torch.allclose(prior.constrain(prior.unconstrain(theta)), theta, atol=1e-5)
        True
    """

    bounded = True

    def __init__(
        self, low: Union[Tensor, float], high: Union[Tensor, float], dim: Optional[int] = None
    ):
        low, high = _parameter_pair(("low", "high"), low, high, dim)
        if not bool((high > low).all()) or not bool(
            torch.isfinite(low).all() & torch.isfinite(high).all()
        ):
            raise ValueError("a box prior needs finite bounds with high > low in every dimension")
        self.low, self.high = low, high
        self.dim = len(low)

    def sample(
        self, sample_shape: SampleShape = (), generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draws of shape ``(*sample_shape, D)``."""
        shape = as_sample_shape(sample_shape) + (self.dim,)
        return self.low + (self.high - self.low) * torch.rand(shape, generator=generator)

    def log_prob(self, theta: Tensor) -> Tensor:
        inside = self.contains(theta)
        value = -torch.log(self.high - self.low).sum().to(theta.dtype)
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def contains(self, theta: Tensor) -> Tensor:
        low, high = self.low.to(theta), self.high.to(theta)
        return ((theta >= low) & (theta <= high)).all(-1)

    def unconstrain(self, theta: Tensor) -> Tensor:
        low, high = self.low.to(theta), self.high.to(theta)
        return torch.logit(((theta - low) / (high - low)).clamp(_EDGE, 1 - _EDGE))

    def constrain(self, u: Tensor) -> Tensor:
        low, high = self.low.to(u), self.high.to(u)
        return low + (high - low) * torch.sigmoid(u)

    def log_abs_det_constrain(self, u: Tensor) -> Tensor:
        """log |d theta / d u| of ``constrain`` at u (..., D) -> (...)."""
        width = (self.high - self.low).to(u)
        return (
            width.log() + torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
        ).sum(-1)

    def state(self) -> dict:
        return {"kind": "box", "low": self.low.tolist(), "high": self.high.tolist()}


class GaussianPrior:
    """Independent normal prior N(loc, diag(scale^2)) (each (D,))."""

    bounded = False

    def __init__(
        self, loc: Union[Tensor, float], scale: Union[Tensor, float], dim: Optional[int] = None
    ):
        loc, scale = _parameter_pair(("loc", "scale"), loc, scale, dim)
        if not bool((scale > 0).all()):
            raise ValueError("scale must be > 0 in every dimension")
        self.loc, self.scale = loc, scale
        self.dim = len(loc)

    def sample(
        self, sample_shape: SampleShape = (), generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draws of shape ``(*sample_shape, D)``."""
        shape = as_sample_shape(sample_shape) + (self.dim,)
        return self.loc + self.scale * torch.randn(shape, generator=generator)

    def log_prob(self, theta: Tensor) -> Tensor:
        loc, scale = self.loc.to(theta), self.scale.to(theta)
        return torch.distributions.Normal(loc, scale).log_prob(theta).sum(-1)

    def contains(self, theta: Tensor) -> Tensor:
        return torch.isfinite(theta).all(-1)

    def state(self) -> dict:
        return {"kind": "gaussian", "loc": self.loc.tolist(), "scale": self.scale.tolist()}


Prior = Union[BoxPrior, GaussianPrior]


def prior_from_state(state: Optional[dict]) -> Optional[Prior]:
    """The prior a ``state()`` dict describes (None stays None)."""
    if state is None:
        return None
    if state["kind"] == "box":
        return BoxPrior(state["low"], state["high"])
    return GaussianPrior(state["loc"], state["scale"])
