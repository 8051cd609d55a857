"""Block-masked convolutional layers and the semi-autoregressive network over image blocks.

``BlockMaskedConv2d`` is one masked convolution over a block grid (``energyflow.ops.masked_conv``
has the masks). ``SemiAutoregressiveConvNet`` stacks them as Gated PixelCNN does, at block
granularity, so that output block (i, j) sees every earlier data block and the noise of every
block up to itself, and nothing else (docs/math.md, section 9):

    v_0 = Vstrict([x; z]) + c_v0                          vertical: rows above only
    h_0 = Hstrict(x) + H(z) + L_0(relu v_0) + c_h0        horizontal: own row, left of (i, j)
    v_l = v_{l-1} + V(relu v_{l-1}) + c_vl                 l = 1 .. L-1 (residual)
    h_l = h_{l-1} + H(relu h_{l-1}) + L_l(relu v_l) + c_hl
    out = O(relu h_{L-1})                                  1 x 1, one block per cell

(``c_*`` are per-layer biases from the context, ``L_l`` and ``O`` 1 x 1 convolutions.) With
kernel k = 2r + 1 the vertical stack reaches L r rows up and L r columns to either side, the
horizontal one L r columns to the left: ``layers_for_grid`` gives the depth at which every
earlier block is in reach.

``generate`` samples all blocks in raster order with cached work: the vertical stack of a row is
computed once, when the row above it is complete; each cell then costs one horizontal step per
layer. All blocks together cost about one full pass (the KV cache of a transformer, here for
convolutions).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energyflow.ops.masked_conv import (
    CONV_BACKENDS,
    block_masked_conv2d,
    tap_mask,
    tap_window,
    window_weight,
)

__all__ = ["BlockMaskedConv2d", "SemiAutoregressiveConvNet", "layers_for_grid"]


class BlockMaskedConv2d(nn.Module):
    """A block-masked convolution over a block grid (``energyflow.ops.block_masked_conv2d``).

    Holds the full (out, in, k, k) weight, as a masked linear layer holds its full matrix, and
    the (k, k) ``mask`` buffer; weights at masked taps stay unused (zero gradient). Initialised
    like ``nn.Conv2d`` over the taps the mask allows (fan-in = in_channels x allowed taps).

    Example:
        >>> conv = BlockMaskedConv2d(3, 8, 3, stack="horizontal", strict=True)
        >>> conv(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stack: str,
        strict: bool,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in CONV_BACKENDS:
            raise ValueError(f"backend must be one of {CONV_BACKENDS}, got {backend!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.stack, self.strict, self.backend = stack, strict, backend
        self.register_buffer("mask", tap_mask(kernel_size, stack, strict))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1] * float(self.mask.sum()))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound).mul_(self.mask)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def window(self) -> Tensor:
        """The sub-kernel over the allowed taps (out, in, rows, cols)."""
        return window_weight(self.weight, self.stack, self.strict)

    def forward(self, x: Tensor) -> Tensor:
        return block_masked_conv2d(
            x, self.weight, self.bias, stack=self.stack, strict=self.strict, backend=self.backend
        )

    def extra_repr(self) -> str:
        out, inp, k, _ = self.weight.shape
        return (
            f"{inp}, {out}, kernel_size={k}, stack={self.stack!r}, strict={self.strict}, "
            f"taps={int(self.mask.sum())}/{k * k}"
        )


def layers_for_grid(rows: int, cols: int, kernel_size: int = 3, minimum: int = 3) -> int:
    """The depth L (at least ``minimum``) at which every output block of a ``rows`` x ``cols``
    grid sees every earlier block: L r >= max(rows, cols) - 1 with r = kernel_size // 2.

    Example:
        >>> layers_for_grid(4, 4), layers_for_grid(7, 7), layers_for_grid(7, 7, kernel_size=5)
        (3, 6, 3)
    """
    r = kernel_size // 2
    return max(minimum, math.ceil((max(rows, cols) - 1) / r))


class SemiAutoregressiveConvNet(nn.Module):
    """Output block (i, j) = G(data blocks before (i, j), noise blocks up to (i, j), context).

    Args:
        block_channels: channels of a data block on the grid (C p^2) and of an output block.
        noise_channels: noise channels per block.
        hidden_channels: channels of both stacks.
        layers: L (``layers_for_grid`` gives the depth that sees every earlier block).
        kernel_size: odd k of the masked convolutions.
        context_features: features of a context vector (e.g. a one-hot class), added to every
            layer of both stacks as a bias.
        backend: of every masked convolution ("auto", "triton", "blocked", "reference").

    Shapes: ``forward(x (B, block_channels, R, C), z (B, noise_channels, R, C), context (B,
    context_features) or None) -> (B, block_channels, R, C)``.

    Example:
        >>> net = SemiAutoregressiveConvNet(4, 4, hidden_channels=8, layers=3)
        >>> z = torch.randn(2, 4, 3, 3)
        >>> x = net.generate(z)
        >>> torch.allclose(net(x, z), x, atol=1e-5)  # a fixed point of the full pass
        True
    """

    def __init__(
        self,
        block_channels: int,
        noise_channels: int,
        *,
        hidden_channels: int = 64,
        layers: int = 3,
        kernel_size: int = 3,
        context_features: int = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be an int >= 1, got {layers!r}")
        self.block_channels, self.noise_channels = block_channels, noise_channels
        self.hidden_channels = hidden_channels
        self.context_features, self.layers = context_features, layers
        width = hidden_channels

        def conv(inp: int, stack: str, strict: bool) -> BlockMaskedConv2d:
            return BlockMaskedConv2d(
                inp, width, kernel_size, stack=stack, strict=strict, backend=backend
            )

        self.vertical_in = conv(block_channels + noise_channels, "vertical", True)
        self.horizontal_data = conv(block_channels, "horizontal", True)
        self.horizontal_noise = conv(noise_channels, "horizontal", False)
        self.vertical = nn.ModuleList(conv(width, "vertical", False) for _ in range(layers - 1))
        self.horizontal = nn.ModuleList(conv(width, "horizontal", False) for _ in range(layers - 1))
        self.links = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.output = nn.Conv2d(width, block_channels, 1)
        # every layer's two context biases from one product
        self.context = nn.Linear(context_features, 2 * layers * width) if context_features else None

    # the full (teacher-forced) pass ----------------------------------------------------------
    def _check(self, z: Tensor, context: Optional[Tensor]) -> None:
        if z.dim() != 4 or z.shape[1] != self.noise_channels:
            raise ValueError(
                f"z must be (batch, {self.noise_channels}, rows, cols), got {tuple(z.shape)}"
            )
        if (context is None) != (self.context is None):
            raise ValueError(
                f"context must be given exactly when context_features > 0 ({self.context_features})"
            )
        if context is not None and context.shape != (len(z), self.context_features):
            raise ValueError(
                f"context must be ({len(z)}, {self.context_features}), got {tuple(context.shape)}"
            )

    def _context_biases(self, context: Optional[Tensor]) -> Optional[Tensor]:
        """(B, L, 2, width): layer l's vertical [0] and horizontal [1] context biases."""
        if self.context is None:
            return None
        return self.context(context).unflatten(1, (self.layers, 2, -1))

    def forward(self, x: Tensor, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Every output block from the true earlier blocks ``x`` in one pass (training)."""
        self._check(z, context)
        if x.shape != (len(z), self.block_channels, *z.shape[2:]):
            raise ValueError(
                f"x must be {(len(z), self.block_channels, *z.shape[2:])}, got {tuple(x.shape)}"
            )
        biases = self._context_biases(context)
        # channels-last: the convolutions of small grids run up to 1.4x faster so on the CPU
        x, z = (t.contiguous(memory_format=torch.channels_last) for t in (x, z))

        def bias(layer: int, stack: int) -> Tensor | float:
            return 0.0 if biases is None else biases[:, layer, stack, :, None, None]

        v = self.vertical_in(torch.cat([x, z], dim=1)) + bias(0, 0)
        h = self.horizontal_data(x) + self.horizontal_noise(z)
        h = h + self.links[0](F.relu(v)) + bias(0, 1)
        for layer in range(1, self.layers):
            v = v + self.vertical[layer - 1](F.relu(v)) + bias(layer, 0)
            h = h + self.horizontal[layer - 1](F.relu(h))
            h = h + self.links[layer](F.relu(v)) + bias(layer, 1)
        return self.output(F.relu(h))

    # cached sampling -------------------------------------------------------------------------
    def generate(
        self,
        z: Tensor,
        context: Optional[Tensor] = None,
        *,
        feedback: Optional[Callable[[Tensor], Tensor]] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> Tensor:
        """All blocks in raster order, each made from the blocks made before it.

        ``feedback(out)`` turns an output block (B, block_channels) into the data block fed to
        the later steps (default: itself). ``progress(k)`` is called after block k. Rows of the
        vertical stack are computed once per grid row, cells of the horizontal stack once per
        cell: about one full pass in all. Differentiable (no in-place writes) when gradients
        are on.

        Returns:
            the data blocks (B, block_channels, R, C), a fixed point of ``forward``.
        """
        self._check(z, context)
        rows, cols = z.shape[2:]
        biases = self._context_biases(context)
        layers = range(self.layers)
        steps = self._cell_products()
        # the noise's share of layer 0's horizontal stack: known before any block is made
        noise_term = self.horizontal_noise(z).permute(0, 2, 3, 1)  # (B, rows, cols, width)
        x_rows: list[Tensor] = []  # finished data rows (B, block_channels, 1, cols)
        v_rows: list[list[Tensor]] = [[] for _ in layers]  # relu(v_l) rows (B, width, 1, cols)
        v_last: list[Optional[Tensor]] = [None for _ in layers]  # v_l of the current row
        for i in range(rows):
            v_cells = []  # relu(v_l) of row i, cell-major (B, cols, width)
            for layer in layers:
                v_last[layer] = self._vertical_row(layer, i, x_rows, z, v_last, v_rows, biases)
                v_rows[layer].append(F.relu(v_last[layer]))
                v_cells.append(v_rows[layer][i][:, :, 0].transpose(1, 2))
            # the cells of this row, each list led by zero cells for taps left of column 0
            cells = [z.new_zeros(len(z), self.block_channels)] * steps[0][2]
            h_cells = [[z.new_zeros(len(z), self.hidden_channels)] * taps for _, _, taps in steps]
            for j in range(cols):
                h: Tensor = noise_term[:, i, j]
                for layer, (weight, bias, taps) in enumerate(steps):
                    source = cells if layer == 0 else h_cells[layer - 1]
                    inputs = torch.cat([*source[len(source) - taps :], v_cells[layer][:, j]], 1)
                    h = h + F.linear(inputs, weight, bias)
                    if biases is not None:
                        h = h + biases[:, layer, 1]
                    h_cells[layer].append(F.relu(h))
                out = F.linear(h_cells[-1][-1], self.output.weight[:, :, 0, 0], self.output.bias)
                cells.append(out if feedback is None else feedback(out))
                if progress is not None:
                    progress(i * cols + j)
            x_rows.append(torch.stack(cells[steps[0][2] :], dim=-1).unsqueeze(2))
        return torch.cat(x_rows, dim=2)

    def _cell_products(self) -> list[tuple[Tensor, Tensor, int]]:
        """Per layer, the horizontal step of one cell as one product: the weight (width, taps x
        in + width) over [the taps' cells, relu v at the cell] (the horizontal convolution's
        window and the link side by side), the summed bias, and the number of taps. Layer 0's
        taps read the data cells to the left (its noise taps are precomputed)."""
        steps = []
        for layer in range(self.layers):
            conv = self.horizontal_data if layer == 0 else self.horizontal[layer - 1]
            taps = conv.window[:, :, 0, :]  # (width, in, taps): tap-major to match the cells
            link = self.links[layer]
            weight = torch.cat([taps.permute(0, 2, 1).flatten(1), link.weight[:, :, 0, 0]], 1)
            steps.append((weight, conv.bias + link.bias, taps.shape[-1]))
        return steps

    def _vertical_row(self, layer, i, x_rows, z, v_last, v_rows, biases) -> Tensor:
        """v_layer of grid row i (B, width, 1, cols), from the rows above (and row i below)."""
        conv = self.vertical_in if layer == 0 else self.vertical[layer - 1]
        di0, di1, _, _ = tap_window(conv.weight.shape[-1], "vertical", conv.strict)
        height = di1 - di0 + 1  # rows of the window: i + di0 .. i + di1
        wanted = range(max(0, i + di0), i + di1 + 1)
        if layer == 0:
            window = [torch.cat([x_rows[k], z[:, :, k : k + 1]], dim=1) for k in wanted]
            previous = 0.0
        else:
            window = [v_rows[layer - 1][k] for k in wanted]
            previous = v_last[layer - 1]
        if window:
            stacked = torch.cat(window, dim=2)
        else:  # row 0 of the strict first layer: nothing above
            stacked = z.new_zeros(len(z), conv.weight.shape[1], 0, z.shape[3])
        r = conv.weight.shape[-1] // 2
        stacked = F.pad(stacked, (r, r, height - stacked.shape[2], 0))
        v = previous + F.conv2d(stacked, conv.window, conv.bias)
        return v if biases is None else v + biases[:, layer, 0, :, None, None]
