"""Semi-autoregressive generator: block k = G(x_<k, z_<=k, context), no density (section 6)."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energyflow.models.base import GenerativeModel
from energyflow.nn.masked import SemiAutoregressiveMLP

KMEANS_ROWS, KMEANS_ITERATIONS = 10000, 20
NOISE_DISTRIBUTIONS = ("normal", "uniform")
UNIFORM_HALF_WIDTH = math.sqrt(3.0)  # uniform on [-sqrt 3, sqrt 3]: unit variance, as the normal


def kmeans(rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """k centres (k, D) of ``rows`` (N, D) and the share of the rows nearest to each (k,):
    k-means++ seeding, then Lloyd iterations (a centre left without rows keeps its place).

    Example:
        >>> rows = torch.cat([torch.zeros(60, 1), torch.full((40, 1), 10.0)])
        >>> centres, shares = kmeans(rows, 2)
        >>> sorted(zip(centres.flatten().tolist(), shares.double().tolist()))
        [(0.0, 0.6...), (10.0, 0.4...)]
    """
    centres = rows[torch.randint(len(rows), (1,), device=rows.device)]
    for _ in range(1, k):
        nearest = torch.cdist(rows, centres).min(1).values.square()
        if float(nearest.sum()) == 0.0:
            chosen = torch.randint(len(rows), (1,), device=rows.device)
        else:
            chosen = torch.multinomial(nearest / nearest.sum(), 1)
        centres = torch.cat([centres, rows[chosen]])
    for _ in range(KMEANS_ITERATIONS):
        assigned = torch.cdist(rows, centres).argmin(1)
        counts = torch.bincount(assigned, minlength=k).to(rows.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assigned, rows)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    assigned = torch.cdist(rows, centres).argmin(1)
    return centres, torch.bincount(assigned, minlength=k).to(rows.dtype) / len(rows)


class SemiAutoregressiveGenerator(GenerativeModel):
    """An implicit generator over K feature blocks, trained by the energy score.

    Block k of a sample is ``G_k(x_<k, z_<=k, context)``: K = 1 is a one-pass generator,
    K = features is fully autoregressive. Sampling runs the K steps with cached work
    (``SemiAutoregressiveMLP.generate``), costing about one masked forward pass.

    A continuous map of connected noise cannot reach disconnected modes without a bridge of
    samples between them. With ``mixture_components`` C > 0 the latent is mixed
    discrete-continuous: one more standard normal noise unit u picks a component
    c = floor(C Phi(u)) (uniform over C), and every block sees its one-hot code beside the
    context, so each component can serve one mode. No gradient passes through the draw (none
    is needed: the energy score judges samples), and the noise stays standard normal, so
    ``fit``'s random stream and resumes work unchanged.

    A ReLU network continues its map linearly into the noise's tails, which training seldom
    visits (one batch row in 370 lies beyond 3 sigma in a given unit), so the modes it makes
    come out with tails too wide (8 Gaussians, normal noise: 0.4% of the samples beyond the
    data's 99.9th percentile of the distance to the nearest centre). With
    ``noise_distribution="uniform"`` each continuous unit z goes through
    u = sqrt(3) (2 Phi(z) - 1), uniform on [-sqrt 3, sqrt 3] (unit variance): a bounded latent
    that training covers, so samples reach only as far as the trained map takes it. The drawn
    noise is still standard normal (as for the component picker).

    Args:
        features: D. blocks: K or the block sizes. noise_features: continuous noise units
            (default D), split over the blocks. context_features: conditioning inputs.
        mixture_components: C discrete components of the latent (0: none).
        noise_distribution: of the continuous units as the network sees them, "normal" or
            "uniform" (bounded, unit variance).
        hidden_features, activation, residual, backend: as ``SemiAutoregressiveMLP``.

    Example:
        >>> import torch
        >>> model = SemiAutoregressiveGenerator(3, 3, context_features=1, hidden_features=(12,))
        >>> model.sample((5,), context=torch.zeros(2, 1)).shape  # 5 samples for 2 contexts
        torch.Size([5, 2, 3])
    """

    def __init__(
        self,
        features: int,
        blocks: Union[int, Sequence[int]],
        *,
        noise_features: Optional[int] = None,
        context_features: int = 0,
        mixture_components: int = 0,
        noise_distribution: str = "normal",
        hidden_features: Sequence[int] = (256, 256),
        activation: str = "relu",
        residual: bool = False,
        backend: str = "auto",
    ) -> None:
        config = dict(
            features=features,
            blocks=blocks,
            noise_features=noise_features,
            context_features=context_features,
            mixture_components=mixture_components,
            noise_distribution=noise_distribution,
            hidden_features=list(hidden_features),
            activation=activation,
            residual=residual,
            backend=backend,
        )
        super().__init__(features, context_features, config)
        if isinstance(mixture_components, bool) or not (
            isinstance(mixture_components, int) and mixture_components >= 0
        ):
            raise ValueError(f"mixture_components must be an int >= 0, got {mixture_components!r}")
        if noise_distribution not in NOISE_DISTRIBUTIONS:
            raise ValueError(
                f"noise_distribution must be one of {NOISE_DISTRIBUTIONS}, got "
                f"{noise_distribution!r}"
            )
        self.mixture_components = mixture_components
        self.noise_distribution = noise_distribution
        self.net = SemiAutoregressiveMLP(
            features,
            blocks,
            noise_features=noise_features or features,
            context_features=context_features + mixture_components,
            hidden_features=hidden_features,
            activation=activation,
            residual=residual,
            backend=backend,
        )

        # the continuous units, and one more that picks the mixture component
        self.noise_features = self.net.noise_features + (1 if mixture_components else 0)
        # each component's centre (standardised units), added to the network's output: set to
        # distinct data rows by fit_standardisation, so that components start apart; and each
        # component's probability: the share of the data nearest its initial centre, so that no
        # component has to stretch over two parts of the data to carry their mass
        if mixture_components:
            self.centres = nn.Parameter(torch.zeros(mixture_components, features))
            self.register_buffer(
                "component_cdf", torch.arange(1, mixture_components + 1) / mixture_components
            )

    def fit_standardisation(
        self, data: Tensor, context: Optional[Tensor] = None, *, method: str = "moments"
    ) -> None:
        """As ``GenerativeModel.fit_standardisation``, and the components from k-means on (up to
        ``KMEANS_ROWS`` of) the standardised ``data``: their centres, so that they start on
        distinct parts of the data, and their probabilities, the shares of the data nearest to
        each (torch's generator draws the seeds)."""
        super().fit_standardisation(data, context, method=method)
        if self.mixture_components and len(data):
            rows = self.standardise(data[torch.randperm(len(data))[:KMEANS_ROWS].to(data.device)])
            with torch.no_grad():
                centres, shares = kmeans(rows.to(self.centres), self.mixture_components)
                self.centres.copy_(centres)
                self.component_cdf.copy_(shares.cumsum(0) / shares.sum())

    def component_codes(self, picker: Tensor) -> Tensor:
        """One-hot codes (rows, C) of the components drawn by standard normal ``picker`` values
        u (rows,): c is where Phi(u) falls in the components' cumulative probabilities."""
        uniform = torch.special.ndtr(picker.detach()).to(self.component_cdf)
        index = torch.searchsorted(self.component_cdf, uniform, right=True)
        return F.one_hot(index.clamp_(max=self.mixture_components - 1), self.mixture_components).to(
            picker.dtype
        )

    def _rsample_standardised(self, z: Tensor, context: Optional[Tensor]) -> Tensor:
        continuous = z[:, : self.net.noise_features]
        if self.noise_distribution == "uniform":
            continuous = UNIFORM_HALF_WIDTH * (2.0 * torch.special.ndtr(continuous) - 1.0)
        if not self.mixture_components:
            return self.net.generate(continuous, context, batch_shape=(z.shape[0],))
        codes = self.component_codes(z[:, -1])
        inputs = codes if context is None else torch.cat([context, codes], dim=-1)
        generated = self.net.generate(continuous, inputs, batch_shape=(z.shape[0],))
        return generated + codes @ self.centres
