"""The interface every energyflow model shares (in the spirit of zuko / nflows).

    model.rsample(shape, context=None)   differentiable samples, (*shape, D) or (*shape, B, D)
    model.sample(shape, context=None)    the same without gradients
    model.log_prob(x, context=None)      log density where one exists, else NotImplementedError

Models hold the data standardisation (``loc``, ``scale``, and with the ``"quantile"`` method
the knots of a Gaussianising map, ``models.quantiles``; for conditional models also the
context's ``context_loc``, ``context_scale``) and their constructor config, so
``model.save(path)`` / ``load_model(path)`` restore them whole. Internally they work on
standardised data and context; the public methods take and return both in their own units.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from energyflow._io import atomic_save
from energyflow.models.quantiles import fit_knots, piecewise_linear

STANDARDISATIONS = ("moments", "quantile")

# Without gradients, samples are drawn this many rows at a time: every layer's activations then
# fit in cache and reuse one buffer, 2-3x faster at 10^5 rows than one pass on a 2-core CPU
# (fresh multi-MB activations cost a page fault per 4 KB). Rows are independent: the result is
# the same (up to BLAS blocking round-off).
SAMPLE_CHUNK_ROWS = 8192


class GenerativeModel(nn.Module):
    """Base class: standardisation, sampling shapes, save/load. Subclasses set
    ``noise_features`` (int: noise units per sample), implement
    ``_rsample_standardised(z_rows, context_rows)`` and, if they have a density, ``log_prob``."""

    has_density = False
    default_estimator: Optional[str] = None  # the energy estimator fit uses when none is named
    noise_features: int

    def __init__(self, features: int, context_features: int, config: dict) -> None:
        super().__init__()
        self.features = features
        self.context_features = context_features
        self.config = dict(config)
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.register_buffer("context_loc", torch.zeros(context_features))
        self.register_buffer("context_scale", torch.ones(context_features))
        # the Gaussianising map's knots (models.quantiles); empty: the moments standardisation
        self.register_buffer("quantile_x", torch.zeros(features, 0))
        self.register_buffer("quantile_z", torch.zeros(0))

    # standardisation ---------------------------------------------------------------------
    @property
    def standardisation(self) -> str:
        """``"quantile"`` when the data goes through the Gaussianising map, else ``"moments"``."""
        return "quantile" if self.quantile_z.numel() else "moments"

    def fit_standardisation(
        self, data: Tensor, context: Optional[Tensor] = None, *, method: str = "moments"
    ) -> None:
        """Set loc/scale to the per-feature mean and std of ``data`` (N, D), and the context's
        to those of ``context`` (N, C) when given. ``method="quantile"`` also maps the data
        through its quantiles to standard normal units (``models.quantiles``; the context keeps
        its moments): for tables whose marginals a network fits poorly (bounded, discrete or
        dequantised features)."""
        if method not in STANDARDISATIONS:
            raise ValueError(f"method must be one of {STANDARDISATIONS}, got {method!r}")
        with torch.no_grad():
            for values, loc, scale in (
                (data, self.loc, self.scale),
                (context, self.context_loc, self.context_scale),
            ):
                if values is not None and len(values) > 1:
                    loc.copy_(values.mean(0))
                    scale.copy_(values.std(0).clamp_min(1e-6))
            if method == "quantile" and len(data) > 1:
                self.quantile_x, self.quantile_z = fit_knots(data.to(self.loc), self.scale)
            else:  # no knots: the moments
                self.quantile_x = self.loc.new_zeros(self.features, 0)
                self.quantile_z = self.loc.new_zeros(0)

    def standardise(self, x: Tensor) -> Tensor:
        if self.standardisation == "moments":
            return (x - self.loc) / self.scale
        return self._quantile_map(x, forward=True)[0]

    def standardise_log_det(self, x: Tensor) -> Tensor:
        """log |d standardise(x) / dx| of each row of x (..., D) -> (...,): what a density in
        standardised units gains in the data's."""
        if self.standardisation == "moments":
            return (-self.scale.log().sum()).expand(x.shape[:-1])
        return self._quantile_map(x, forward=True)[1].log().sum(-1)

    def standardise_context(self, context: Optional[Tensor]) -> Optional[Tensor]:
        """Context in its own units -> standardised (None stays None)."""
        return None if context is None else (context - self.context_loc) / self.context_scale

    def unstandardise(self, x: Tensor) -> Tensor:
        if self.standardisation == "moments":
            return x * self.scale + self.loc
        return self._quantile_map(x, forward=False)[0]

    def _quantile_map(self, x: Tensor, forward: bool) -> tuple[Tensor, Tensor]:
        """The Gaussianising map (or its inverse) and its derivative, both x's shape."""
        rows = x.reshape(-1, self.features)
        data_knots = self.quantile_x.to(x)
        normal_knots = self.quantile_z.to(x).expand_as(data_knots).contiguous()
        if forward:
            y, slope = piecewise_linear(rows, data_knots, normal_knots, 1 / self.scale.to(x))
        else:
            y, slope = piecewise_linear(rows, normal_knots, data_knots, self.scale.to(x))
        return y.reshape(x.shape), slope.reshape(x.shape)

    # sampling ----------------------------------------------------------------------------
    def _rsample_standardised(self, z: Tensor, context: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # models saved before context standardisation existed: identity standardisation
        for name, fill in (("context_loc", torch.zeros), ("context_scale", torch.ones)):
            state_dict.setdefault(prefix + name, fill(self.context_features))
        for name in ("quantile_x", "quantile_z"):  # as many knots as the saved model has
            if prefix + name in state_dict:
                setattr(self, name, self.loc.new_empty(state_dict[prefix + name].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sample_lead_shape(
        self, shape: Sequence[int], context: Optional[Tensor] = None
    ) -> tuple[int, ...]:
        """The leading shape of ``rsample(shape, context)``: ``shape`` [+ context's batch]."""
        return self._rows_and_context(shape, context)[0]

    def _rows_and_context(
        self, shape: Sequence[int], context: Optional[Tensor]
    ) -> tuple[tuple[int, ...], Optional[Tensor]]:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if self.context_features == 0:
            if context is not None:
                raise ValueError("this model takes no context")
            return shape, None
        if context is None:
            raise ValueError(f"this model needs a context of {self.context_features} features")
        if context.shape[-1] != self.context_features:
            raise ValueError(
                f"context must have {self.context_features} features, got shape "
                f"{tuple(context.shape)}"
            )
        lead = shape + tuple(context.shape[:-1])
        rows = context.expand(*lead, self.context_features).reshape(-1, self.context_features)
        return lead, self.standardise_context(rows)

    def rsample_standardised(
        self,
        shape: Sequence[int] = (),
        context: Optional[Tensor] = None,
        *,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """Differentiable samples in standardised units, (*shape[, B], D).

        ``noise`` (*shape[, B], noise_features) replaces the standard normal draws (a caller
        that owns its random stream, such as ``fit``). Without gradients the rows are computed
        ``SAMPLE_CHUNK_ROWS`` at a time."""
        lead, context_rows = self._rows_and_context(shape, context)
        if noise is None:
            z = torch.randn(
                math.prod(lead), self.noise_features, device=self.loc.device, dtype=self.loc.dtype
            )
        elif noise.shape != (*lead, self.noise_features):
            raise ValueError(
                f"noise must have shape {(*lead, self.noise_features)}, got {tuple(noise.shape)}"
            )
        else:
            z = noise.reshape(-1, self.noise_features)
        if torch.is_grad_enabled() or len(z) <= SAMPLE_CHUNK_ROWS:
            rows = self._rsample_standardised(z, context_rows)
        else:  # chunks: each layer's output stays in cache and its buffer is reused
            rows = torch.cat(
                [
                    self._rsample_standardised(
                        z[start : start + SAMPLE_CHUNK_ROWS],
                        None
                        if context_rows is None
                        else context_rows[start : start + SAMPLE_CHUNK_ROWS],
                    )
                    for start in range(0, len(z), SAMPLE_CHUNK_ROWS)
                ]
            )
        return rows.reshape(*lead, self.features)

    def rsample(self, shape: Sequence[int] = (), context: Optional[Tensor] = None) -> Tensor:
        """Differentiable samples: (*shape, D), or (*shape, B, D) for a context (B, C)."""
        return self.unstandardise(self.rsample_standardised(shape, context))

    @torch.no_grad()
    def sample(self, shape: Sequence[int] = (), context: Optional[Tensor] = None) -> Tensor:
        """Samples without gradients (the cached sampling path)."""
        return self.rsample(shape, context)

    # density -----------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} is an implicit generator x = G(z): it has no tractable "
            "density. "
            "Judge it by samples (energy distance, C2ST, MMD) or a KDE estimate "
            "(energyflow.metrics.kde_log_likelihood); BlockAffineFlow has an exact log_prob."
        )

    # persistence -------------------------------------------------------------------------
    def save(self, path: os.PathLike) -> None:
        atomic_save(
            {"class": type(self).__name__, "config": self.config, "state": self.state_dict()}, path
        )


def load_model(path: os.PathLike, map_location: str = "cpu") -> GenerativeModel:
    """Rebuild a model saved with ``model.save(path)`` (config, standardisation and weights)."""
    from energyflow.models import MODELS

    saved = torch.load(path, map_location=map_location, weights_only=True)
    classes = {cls.__name__: cls for cls in MODELS.values()}
    if saved.get("class") not in classes:
        raise ValueError(f"{path}: not an energyflow model (class {saved.get('class')!r})")
    cls = classes[saved["class"]]
    model = cls(**saved["config"])
    model.load_state_dict(saved["state"])
    return model
