"""Semi-autoregressive generator: block k = G(x_<k, z_<=k, context), no density (section 6)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from energyflow.models.base import GenerativeModel
from energyflow.nn.masked import SemiAutoregressiveMLP


class SemiAutoregressiveGenerator(GenerativeModel):
    """An implicit generator over K feature blocks, trained by the energy score.

    Block k of a sample is ``G_k(x_<k, z_<=k, context)``: K = 1 is a one-pass generator,
    K = features is fully autoregressive. Sampling runs the K steps with cached work
    (``SemiAutoregressiveMLP.generate``), costing about one masked forward pass.

    Args:
        features: D. blocks: K or the block sizes. noise_features: noise units (default D),
            split over the blocks. context_features: conditioning inputs.
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
            hidden_features=list(hidden_features),
            activation=activation,
            residual=residual,
            backend=backend,
        )
        super().__init__(features, context_features, config)
        self.net = SemiAutoregressiveMLP(
            features,
            blocks,
            noise_features=noise_features or features,
            context_features=context_features,
            hidden_features=hidden_features,
            activation=activation,
            residual=residual,
            backend=backend,
        )

        self.noise_features = self.net.noise_features

    def _rsample_standardised(self, z: Tensor, context: Optional[Tensor]) -> Tensor:
        return self.net.generate(z, context, batch_shape=(z.shape[0],))
