"""Image generator: semi-autoregressive over p x p pixel blocks (docs/math.md, section 9).

Block (i, j) of an image = G(blocks before (i, j) in raster order, noise of blocks up to
(i, j), context), by ``energyflow.nn.SemiAutoregressiveConvNet`` on the block grid. Trained by
the per-block energy score given the true earlier blocks (estimator "block_score": one pass
for all blocks, ``rsample_blocks_standardised``); sampled block by block with cached work.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from energyflow.models.base import STANDARDISATIONS, GenerativeModel
from energyflow.nn.masked_conv import SemiAutoregressiveConvNet, layers_for_grid
from energyflow.ops.masked_conv import from_blocks, to_blocks

__all__ = ["ImageGenerator", "default_patch"]

# Where more than ATOM_SHARE of a channel's pixels sit exactly on its minimum (or maximum), say a
# background of exact zeros, that bound lies RANGE_MARGIN of the range beyond it, so that those
# pixels are reached at a finite pre-activation: a bound on such an atom drove the sigmoid into
# saturation, where the outputs stop depending on the noise (a 28 x 28 run collapsed to blank
# images so). Continuous data (dequantised pixels) keeps the exact bounds: a margin there let
# background pixels fall below the data's minimum, which the boosted-tree C2ST read (digits:
# 0.947 against 0.929).
RANGE_MARGIN, ATOM_SHARE = 0.05, 1e-3


def default_patch(height: int, width: int) -> int:
    """Block side for an image: 4 from 24 pixels on the short side (MNIST: a 7 x 7 grid of
    4 x 4 blocks), else 2, else 1 (the largest of these that divides both sides).

    Example:
        >>> default_patch(28, 28), default_patch(8, 8), default_patch(9, 6)
        (4, 2, 1)
    """
    for patch in (4, 2):
        if (patch == 2 or min(height, width) >= 24) and height % patch == width % patch == 0:
            return patch
    return 1


class ImageGenerator(GenerativeModel):
    """An implicit image generator over a grid of p x p blocks, trained by the energy score.

    Works on flattened images (``features`` = C H W, rows in C, H, W order) like every model,
    so ``fit``, the judges and the CLI take it as they take the others. Pixels are standardised
    per channel (one mean and scale per channel, not per pixel: the convolutions share weights
    across positions); outputs stay in the data's range per channel (a sigmoid between the
    training data's minimum and maximum; a bound that many pixels sit on exactly, such as a
    background of zeros, moved out by ``RANGE_MARGIN`` of the range), so no sample has pixels
    outside it, or far outside it.

    Args:
        features: C H W (checked against ``image_shape``).
        image_shape: (C, H, W).
        patch: block side p (default ``default_patch(H, W)``); it must divide H and W.
        context_features: conditioning features (a one-hot class for a class-conditional model).
        noise_channels: noise units per block (default 2 C p^2).
        hidden_channels: width of both stacks. layers: depth (default ``layers_for_grid``: every
            block sees all earlier blocks). kernel_size: odd k. backend: of the masked
            convolutions.

    Example:
        >>> model = ImageGenerator(16, (1, 4, 4), patch=2, hidden_channels=8)
        >>> model.sample((3,)).shape  # flattened images
        torch.Size([3, 16])
    """

    default_estimator = "block_score"

    def __init__(
        self,
        features: int,
        image_shape: Sequence[int],
        *,
        patch: Optional[int] = None,
        context_features: int = 0,
        noise_channels: Optional[int] = None,
        hidden_channels: int = 64,
        layers: Optional[int] = None,
        kernel_size: int = 3,
        backend: str = "auto",
    ) -> None:
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of sizes >= 1, got {image_shape}")
        if features != math.prod(image_shape):
            raise ValueError(
                f"features ({features}) must be C x H x W of image_shape {image_shape} "
                f"({math.prod(image_shape)})"
            )
        channels, height, width = image_shape
        patch = default_patch(height, width) if patch is None else patch
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be an int >= 1, got {patch!r}")
        if height % patch or width % patch:
            raise ValueError(
                f"patch {patch} must divide the image's height and width ({height} x {width})"
            )
        grid = (height // patch, width // patch)
        block_channels = channels * patch * patch
        noise_channels = noise_channels or 2 * block_channels
        layers = layers or layers_for_grid(*grid, kernel_size)
        config = dict(
            features=features,
            image_shape=list(image_shape),
            patch=patch,
            context_features=context_features,
            noise_channels=noise_channels,
            hidden_channels=hidden_channels,
            layers=layers,
            kernel_size=kernel_size,
            backend=backend,
        )
        super().__init__(features, context_features, config)
        self.image_shape, self.patch, self.grid = image_shape, patch, grid
        self.net = SemiAutoregressiveConvNet(
            block_channels,
            noise_channels,
            hidden_channels=hidden_channels,
            layers=layers,
            kernel_size=kernel_size,
            context_features=context_features,
            backend=backend,
        )
        self.noise_features = noise_channels * grid[0] * grid[1]
        # each channel's data range in standardised units, where the outputs are kept
        self.register_buffer("low", torch.full((channels,), -3.0))
        self.register_buffer("high", torch.full((channels,), 3.0))

    @property
    def blocks(self) -> int:
        """K, the number of blocks (grid cells)."""
        return self.grid[0] * self.grid[1]

    def fit_standardisation(
        self, data: Tensor, context: Optional[Tensor] = None, *, method: str = "moments"
    ) -> None:
        """The outputs' units and bounds from ``data`` (N, C H W); the context as the base class
        does. ``"moments"``: each channel's mean and scale as loc / scale, and its range
        (minimum, maximum) as the bounds. ``"quantile"``: each pixel through its own quantiles
        to normal units (``models.quantiles``), and the outer normal quantiles as the bounds,
        so samples land within every pixel's data range. A bound on which more than
        ``ATOM_SHARE`` of a channel's pixels sit moves out by ``RANGE_MARGIN`` of the range."""
        if method not in STANDARDISATIONS:
            raise ValueError(f"method must be one of {STANDARDISATIONS}, got {method!r}")
        if len(data) < 2:
            super().fit_standardisation(data[:0], context)  # the context's only
            return
        channels = self.image_shape[0]
        pixels = (
            data.detach().reshape(len(data), channels, -1).transpose(0, 1).reshape(channels, -1)
        )
        with torch.no_grad():
            low, high = pixels.min(1).values, pixels.max(1).values
            on_low = (pixels == low[:, None]).double().mean(1) > ATOM_SHARE
            on_high = (pixels == high[:, None]).double().mean(1) > ATOM_SHARE
            if method == "quantile":
                super().fit_standardisation(data, context, method="quantile")
                low = torch.full_like(low, float(self.quantile_z[0]))
                high = torch.full_like(high, float(self.quantile_z[-1]))
            else:
                super().fit_standardisation(data[:0], context)  # the context's only
                mean, scale = pixels.mean(1), pixels.std(1).clamp_min(1e-6)
                per_pixel = self.features // channels
                self.loc.copy_(mean.repeat_interleave(per_pixel))
                self.scale.copy_(scale.repeat_interleave(per_pixel))
                low, high = (low - mean) / scale, (high - mean) / scale
            margin = RANGE_MARGIN * (high - low)
            self.low.copy_(low - on_low * margin)
            self.high.copy_(high + on_high * margin)

    # images <-> grid ------------------------------------------------------------------------
    def _grid(self, rows: Tensor) -> Tensor:
        """Flattened images (N, C H W) -> block grid (N, C p^2, R, C')."""
        return to_blocks(rows.reshape(len(rows), *self.image_shape), self.patch)

    def _bounded(self, out: Tensor) -> Tensor:
        """Raw outputs (N, C p^2, ...) -> values within each channel's data range."""
        shape = (-1,) + (1,) * (out.dim() - 2)
        low = self.low.repeat_interleave(self.patch**2).view(shape)
        high = self.high.repeat_interleave(self.patch**2).view(shape)
        return low + (high - low) * torch.sigmoid(out)

    def _noise_grid(self, z: Tensor) -> Tensor:
        return z.reshape(len(z), self.net.noise_channels, *self.grid)

    def _rsample_standardised(self, z: Tensor, context: Optional[Tensor]) -> Tensor:
        grid = self.net.generate(self._noise_grid(z), context, feedback=self._bounded)
        return from_blocks(grid, self.patch).reshape(len(z), self.features)

    def rsample_blocks_standardised(
        self, x: Tensor, context: Optional[Tensor], noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Samples of every block given the true earlier blocks, in one pass (training).

        Args:
            x: (B, C H W) standardised images. context: (B, context_features) standardised,
                or None. noise: (B, m, noise_features), m samples per image.

        Returns:
            samples (B, K, m, C p^2) and the true blocks (B, K, C p^2), K = blocks.
        """
        rows, m = noise.shape[:2]
        target = self._grid(x)  # (B, C p^2, R, C')
        inputs = target.repeat_interleave(m, dim=0)
        if context is not None:
            context = context.repeat_interleave(m, dim=0)
        out = self._bounded(self.net(inputs, self._noise_grid(noise.flatten(0, 1)), context))
        samples = out.reshape(rows, m, out.shape[1], self.blocks).permute(0, 3, 1, 2)
        return samples, target.flatten(2).transpose(1, 2)
