"""Block-masked (semi-autoregressive) layers and networks (docs/math.md, section 6).

``BlockMaskedLinear`` is a linear layer whose units carry levels; ``SemiAutoregressiveMLP``
stacks them so that output block k depends only on data blocks < k, noise blocks <= k and the
context, and runs the K sampling steps with cached work (``start`` / ``step``) at the cost of
one masked forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from energyflow.ops import dispatch
from energyflow.ops.mask_plan import Levels, MaskPlan, split_sizes
from energyflow.ops.masked_linear import ACTIVATIONS, masked_linear, masked_linear_level

GENERATE_TILE_ROWS = 64  # rows that run all K steps together in the C++ generate


class BlockMaskedLinear(nn.Module):
    """y = act(x (W * M)^T + b) with M[o, i] = [in_level_i < out_level_o] (strict) or ``<=``.

    Levels must be non-decreasing, so M is block lower-triangular and every backend skips its
    zero blocks: ``"blocked"`` (one GEMM per strip of levels, CPU default), ``"triton"``
    (tile-skipping kernels with the activation in the epilogue, CUDA default) or
    ``"reference"`` (dense W * M).
    The weight is stored dense with its masked entries held at zero (they never get a gradient).
    On the CPU, ``"auto"`` runs whichever of the dense masked product, the blocked strips and (at
    a few batch rows) the C++ row kernel timed fastest on the layer at first use
    (``ops.masked_linear``).

    Shapes: x (..., in_features) -> (..., out_features).

    Example:
        >>> import torch
        >>> layer = BlockMaskedLinear([0, 0, 1, 1], [1, 1, 2], strict=True, activation="relu")
        >>> layer(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> layer.plan.prefix.tolist()  # level-1 outputs read the level-0 inputs, level 2 all
        [2, 2, 4]
    """

    def __init__(
        self,
        in_levels: Levels,
        out_levels: Levels,
        *,
        strict: bool,
        bias: bool = True,
        activation: Optional[str] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        activation = activation or "none"
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or None, got {activation!r}"
            )
        dispatch.check_available(backend, dispatch.MASKED_BACKENDS)
        self.plan = MaskPlan.build(in_levels, out_levels, strict)
        self.activation = activation
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(self.plan.out_features, self.plan.in_features))
        self.bias = nn.Parameter(torch.empty(self.plan.out_features)) if bias else None
        self.register_buffer("prefix", self.plan.prefix.clone(), persistent=False)
        self.register_buffer("first_out", self.plan.first_out.clone(), persistent=False)
        self.register_buffer("mask", self.plan.mask(), persistent=False)
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        return self.plan.in_features

    @property
    def out_features(self) -> int:
        return self.plan.out_features

    def reset_parameters(self) -> None:
        """nn.Linear's uniform init, each row's fan-in = its allowed inputs; masked entries 0."""
        fan_in = self.plan.prefix.clamp_min(1).double()
        bound = (1.0 / fan_in.sqrt()).to(self.weight.dtype)[:, None]
        with torch.no_grad():
            self.weight.uniform_(-1, 1).mul_(bound).mul_(self.mask)
            if self.bias is not None:
                self.bias.uniform_(-1, 1).mul_(bound[:, 0])

    def _backend(self, x: Tensor) -> str:
        return dispatch.resolve_masked(self.backend, x.device)

    def level_rows(self, level: int) -> tuple[int, int]:
        """(start, end) of the output units at ``level``."""
        return self.plan.level_rows(level)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features in its last dim, got shape "
                f"{tuple(x.shape)}"
            )
        return masked_linear(
            x,
            self.weight,
            self.bias,
            self.plan,
            prefix=self.prefix,
            first_out=self.first_out,
            mask=self.mask,
            activation=self.activation,
            backend=self._backend(x),
            choose_fastest=self.backend == "auto",
        )

    def forward_level(self, x_prefix: Tensor, level: int, out: Optional[Tensor] = None) -> Tensor:
        """Only the outputs at ``level``, from the inputs they read: (M, >= prefix) -> (M, n),
        written into ``out`` if given."""
        return masked_linear_level(
            x_prefix,
            self.weight,
            self.bias,
            self.plan,
            level,
            prefix=self.prefix,
            activation=self.activation,
            backend=self._backend(x_prefix),
            out=out,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"strict={self.plan.strict}, "
            f"density={self.plan.density():.3f}, activation={self.activation!r}, "
            f"backend={self.backend!r}"
        )


@dataclass
class SteppingState:
    """Cached work of ``SemiAutoregressiveMLP.start`` / ``step``.

    Attributes:
        lead: the batch shape of the outputs.
        noise: the noise of each block, (rows, n_k).
        caches: the inputs (level order: context, noise_1, data_1, ...) and then each layer's
            outputs, as ``LevelCache``s of the level slices computed so far.
        next_block: the block the next ``step`` produces (1-based).
    """

    lead: torch.Size
    noise: tuple[Tensor, ...]
    caches: list["LevelCache"]
    next_block: int = 1


class LevelCache:
    """Columns of one layer's activations, filled a level slice at a time.

    Without autograd the slices are written into one preallocated buffer and ``prefix()`` is a
    view (no copies); with autograd they are kept as a list and concatenated, so no tensor that
    a backward pass needs is ever written in place.
    """

    def __init__(self, rows: int, width: int, like: Tensor, differentiable: bool) -> None:
        self.slices: list[Tensor] = []
        self.buffer = None if differentiable else like.new_empty(rows, width)
        self.filled = 0

    def reserve(self, width: int) -> Optional[Tensor]:
        """The next ``width`` columns of the buffer to compute in place (counted as filled), or
        None when slices are kept as a list (with autograd)."""
        if self.buffer is None:
            return None
        self.filled += width
        return self.buffer[:, self.filled - width : self.filled]

    def append(self, new: Tensor) -> None:
        if self.buffer is None:
            self.slices.append(new)
        else:
            self.buffer[:, self.filled : self.filled + new.shape[1]] = new
        self.filled += new.shape[1]

    def prefix(self) -> Tensor:
        if self.buffer is None:
            return torch.cat(self.slices, dim=-1)
        return self.buffer[:, : self.filled]


class SemiAutoregressiveMLP(nn.Module):
    """Masked MLP over K feature blocks: output block k = f(data blocks < k, noise <= k, context).

    Args:
        features: D, the data features (split into ``blocks``).
        blocks: K (near-equal split) or the list of block sizes summing to ``features``.
        noise_features: noise units in total, split near-equally over the blocks.
        context_features: context units, seen by every output.
        hidden_features: widths of the hidden layers (each >= K), split over the K levels.
        out_multiplier: outputs per feature; the output is (..., features * out_multiplier),
            feature-major (``out.view(..., features, out_multiplier)``).
        activation: hidden activation, one of relu, gelu, silu, tanh, elu.
        residual: add each hidden layer's input to its output where the widths match.
        backend: "auto" | "triton" | "blocked" | "reference" for every layer.

    Units are sorted by level internally (inputs: context, then noise_k and data_k for each k),
    so every weight is block lower-triangular and costs about (K+1)/(2K) of a dense layer.

    Cached sampling (docs/math.md, section 7): ``state = net.start(z, context)`` then, for
    k = 1..K, ``out_k = net.step(state, x_prev)`` with x_prev the data block k-1 (None at k = 1)
    returns output block k, ``(..., block_k * out_multiplier)``, equal to the same slice of
    ``net(x, z, context)``; each step computes only the level-k units of every layer.
    ``generate`` runs all K steps.

    Example:
        >>> import torch
        >>> net = SemiAutoregressiveMLP(8, 4, noise_features=8, hidden_features=(32, 32))
        >>> x, z = torch.randn(16, 8), torch.randn(16, 8)
        >>> net(x, z).shape
        torch.Size([16, 8])
        >>> net.generate(z).shape  # K = 4 cached steps, about one masked pass in all
        torch.Size([16, 8])
    """

    def __init__(
        self,
        features: int,
        blocks: Union[int, Sequence[int]],
        *,
        noise_features: int = 0,
        context_features: int = 0,
        hidden_features: Sequence[int] = (256, 256),
        out_multiplier: int = 1,
        activation: str = "relu",
        residual: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.block_sizes = split_sizes(features, blocks, "blocks")
        if any(size == 0 for size in self.block_sizes):
            raise ValueError(f"blocks must all be non-empty, got sizes {self.block_sizes}")
        k_blocks = len(self.block_sizes)
        if (
            isinstance(noise_features, bool)
            or not isinstance(noise_features, int)
            or noise_features < 0
        ):
            raise ValueError(f"noise_features must be an int >= 0, got {noise_features!r}")
        self.noise_sizes = (
            split_sizes(noise_features, k_blocks, "noise blocks")
            if noise_features
            else [0] * k_blocks
        )
        if context_features < 0 or out_multiplier < 1:
            raise ValueError("context_features must be >= 0 and out_multiplier >= 1")
        if activation not in ACTIVATIONS or activation == "none":
            raise ValueError(
                f"activation must be one of relu, gelu, silu, tanh, elu; got {activation!r}"
            )
        hidden = [int(h) for h in hidden_features]
        if not hidden or any(h < k_blocks for h in hidden):
            raise ValueError(
                f"hidden_features {hidden} must be non-empty with every width >= K = {k_blocks}"
            )
        self.features, self.blocks = features, k_blocks
        self.noise_features, self.context_features = sum(self.noise_sizes), context_features
        self.out_multiplier, self.residual = out_multiplier, residual

        # Levels (x2 so one strict rule serves data "<" and noise "<="): context 0,
        # noise of block k 2k-1, data of block k 2k; hidden and output units of level k: 2k.
        in_levels, order = [0] * context_features, list(range(context_features))
        data_at, noise_at = context_features, context_features + features
        for k, (d, n) in enumerate(zip(self.block_sizes, self.noise_sizes), start=1):
            in_levels += [2 * k - 1] * n + [2 * k] * d
            order += list(range(noise_at, noise_at + n)) + list(range(data_at, data_at + d))
            noise_at, data_at = noise_at + n, data_at + d
        self.register_buffer("input_order", torch.tensor(order, dtype=torch.long), persistent=False)

        def levels_of(width: int) -> list[int]:
            return [
                2 * k
                for k, size in enumerate(split_sizes(width, k_blocks, "levels"), start=1)
                for _ in range(size)
            ]

        out_levels = [
            2 * k
            for k, d in enumerate(self.block_sizes, start=1)
            for _ in range(d * out_multiplier)
        ]
        widths = [levels_of(h) for h in hidden]
        layers = [
            BlockMaskedLinear(
                in_levels, widths[0], strict=True, activation=activation, backend=backend
            )
        ]
        for before, after in zip(widths[:-1], widths[1:]):
            layers.append(
                BlockMaskedLinear(
                    before, after, strict=False, activation=activation, backend=backend
                )
            )
        layers.append(
            BlockMaskedLinear(
                widths[-1], out_levels, strict=False, activation=None, backend=backend
            )
        )
        self.layers = nn.ModuleList(layers)
        # what each cached step computes in each layer: its level's (start, end, prefix)
        groups = [
            [layer.plan.level_group(2 * k) for layer in layers] for k in range(1, k_blocks + 1)
        ]
        self._step_tables = [[bound for group in step for bound in group] for step in groups]
        self._step_widths = [[end - start for start, end, _ in step] for step in groups]
        self._step_activations = [layer.activation for layer in layers]
        self._residual_layers = [self._is_residual(index) for index in range(len(layers))]
        # before step k, output block k - 1 (the last layer's rows of level 2k - 2) goes to the
        # input columns of data block k - 1 (level 2k - 2)
        self._generate_feedback = [0, 0, 0]
        for k in range(2, k_blocks + 1):
            start, end, _ = layers[-1].plan.level_group(2 * k - 2)
            column = int(torch.searchsorted(torch.tensor(in_levels), 2 * k - 2))
            self._generate_feedback += [start, end, column]

    def _is_residual(self, index: int) -> bool:
        layer = self.layers[index]
        return (
            self.residual
            and 0 < index < len(self.layers) - 1
            and layer.in_features == layer.out_features
        )

    def _check(
        self, name: str, tensor: Optional[Tensor], width: int, lead: Optional[torch.Size]
    ) -> None:
        if width == 0:
            if tensor is not None and tensor.shape[-1] != 0:
                raise ValueError(f"{name} was given but the network has no {name} features")
            return
        if tensor is None:
            raise ValueError(f"{name} is required: the network has {width} {name} features")
        if tensor.shape[-1] != width:
            raise ValueError(
                f"{name} must have {width} features in its last dim, got shape "
                f"{tuple(tensor.shape)}"
            )
        if lead is not None and tensor.shape[:-1] != lead:
            raise ValueError(
                f"{name} has leading shape {tuple(tensor.shape[:-1])}, expected {tuple(lead)}"
            )

    def forward(
        self, x: Tensor, z: Optional[Tensor] = None, context: Optional[Tensor] = None
    ) -> Tensor:
        """x (..., features), z (..., noise_features), context (..., context_features) ->
        (..., features * out_multiplier)."""
        self._check("x", x, self.features, None)
        self._check("z", z, self.noise_features, x.shape[:-1])
        self._check("context", context, self.context_features, x.shape[:-1])
        h = self._level_ordered(x, z, context)
        for layer, residual in zip(self.layers, self._residual_layers):
            h = h + layer(h) if residual else layer(h)
        return h

    def _level_ordered(self, x: Tensor, z: Optional[Tensor], context: Optional[Tensor]) -> Tensor:
        """The inputs (..., context + features + noise) in the first layer's level order."""
        parts = [t for t in (context, x, z) if t is not None and t.shape[-1] > 0]
        return torch.cat(parts, dim=-1).index_select(-1, self.input_order)

    def start(
        self, z: Optional[Tensor] = None, context: Optional[Tensor] = None, *, batch_shape=None
    ) -> SteppingState:
        """Begin cached K-step generation from the noise and context (``batch_shape`` when the
        network has neither)."""
        lead = (
            z.shape[:-1]
            if z is not None
            else context.shape[:-1]
            if context is not None
            else torch.Size(batch_shape or ())
        )
        self._check("z", z, self.noise_features, lead)
        self._check("context", context, self.context_features, lead)
        reference = next(self.parameters())
        rows = math.prod(lead)
        noise = z.reshape(rows, -1) if self.noise_features else reference.new_zeros(rows, 0)
        differentiable = torch.is_grad_enabled() and (
            reference.requires_grad
            or (z is not None and z.requires_grad)
            or (context is not None and context.requires_grad)
        )
        widths = [self.layers[0].in_features] + [layer.out_features for layer in self.layers]
        caches = [LevelCache(rows, width, reference, differentiable) for width in widths]
        if self.context_features:
            caches[0].append(context.reshape(rows, -1).to(reference.dtype))
        return SteppingState(lead=lead, noise=noise.split(self.noise_sizes, dim=-1), caches=caches)

    def step(self, state: SteppingState, x_prev: Optional[Tensor] = None) -> Tensor:
        """Produce output block k = ``state.next_block`` from data block k-1 (None when k = 1)."""
        k = state.next_block
        if k > self.blocks:
            raise ValueError(f"all {self.blocks} blocks were already produced")
        inputs = state.caches[0]
        if k > 1:
            self._check("x_prev", x_prev, self.block_sizes[k - 2], state.lead)
            inputs.append(x_prev.reshape(-1, x_prev.shape[-1]))
        elif x_prev is not None:
            raise ValueError("x_prev must be None at the first step (block 1 reads no data)")
        inputs.append(state.noise[k - 1])
        if self._native_step(state):
            widths = self._step_widths[k - 1]
            new = [cache.reserve(width) for cache, width in zip(state.caches[1:], widths)][-1]
            cpp = dispatch.cpp_module()
            cpp.masked_step(*self._step_arguments(state), self._step_tables[k - 1],
                            self._step_activations, self._residual_layers)  # fmt: skip
            state.next_block = k + 1
            return new.reshape(*state.lead, -1)
        below = inputs.prefix()
        for index, layer in enumerate(self.layers):
            cache = state.caches[index + 1]
            start, end = layer.level_rows(2 * k)
            slot = cache.reserve(end - start)  # without autograd: computed in the cache
            new = layer.forward_level(below, 2 * k, out=slot)
            if self._residual_layers[index]:
                new = new + below[:, start:end] if slot is None else new.add_(below[:, start:end])
            if slot is None:
                cache.append(new)
            below = cache.prefix()
        state.next_block = k + 1
        return new.reshape(*state.lead, -1)

    def _native_step(self, state: SteppingState) -> bool:
        """Whether the C++ extension runs the steps: no autograd (the caches are buffers), CPU
        tensors of the weights' dtype outside autocast, and no Triton layer."""
        inputs = state.caches[0].buffer
        return (
            inputs is not None
            and all(cache.buffer is not None for cache in state.caches)
            and inputs.device.type == "cpu"
            and inputs.dtype == self.layers[0].weight.dtype
            and not torch.is_autocast_enabled("cpu")
            and dispatch.cpp_available()
            and all(layer.backend != "triton" for layer in self.layers)
        )

    def _generate_native(
        self, state: SteppingState, z: Optional[Tensor], context: Optional[Tensor]
    ) -> Tensor:
        """All K steps in the C++ extension: the input buffer holds the context and all noise
        from the start (a step reads only the noise of its block and before), and each output
        block is copied to its data columns before the next step. Where the extension's row
        kernel takes every level slice (fp32, AVX2, relu or no activation; at most 16 units a
        level, or any width for up to 16 rows), rows run in tiles of ``GENERATE_TILE_ROWS``
        that each run every step while their activations stay in cache; else all rows a step
        at a time, a GEMM per slice."""
        like = state.caches[0].buffer
        rows = like.shape[0]
        inputs = self._level_ordered(
            like.new_zeros(rows, self.features),
            None if z is None else z.reshape(rows, -1).to(like),
            None if context is None else context.reshape(rows, -1).to(like),
        )
        buffers, weights, biases = self._step_arguments(state)
        buffers[0] = inputs
        tables = [bound for table in self._step_tables for bound in table]
        dispatch.cpp_module().masked_generate(
            buffers, weights, biases, tables, self._generate_feedback, self._step_activations,
            self._residual_layers, GENERATE_TILE_ROWS,
        )  # fmt: skip
        return buffers[-1].reshape(*state.lead, self.features)

    def _step_arguments(self, state: SteppingState) -> tuple[list, list, list]:
        buffers = [cache.buffer for cache in state.caches]
        weights = [layer.weight.detach() for layer in self.layers]
        biases = [
            layer.weight.new_empty(0) if layer.bias is None else layer.bias.detach()
            for layer in self.layers
        ]
        return buffers, weights, biases

    def generate(
        self,
        z: Optional[Tensor] = None,
        context: Optional[Tensor] = None,
        *,
        batch_shape: Optional[Sequence[int]] = None,
        feedback: Optional[Callable[[int, Tensor], Tensor]] = None,
    ) -> Tensor:
        """All K blocks by cached stepping, each step fed the data block the previous one made.

        ``feedback(k, out_k)`` turns the network's output block k (0-based, ``(..., d_k *
        out_multiplier)``) into data block k ``(..., d_k)``, the input of step k + 1; by default
        the output block is the data block (a generator, ``out_multiplier = 1``). A flow passes
        ``x_k = shift_k + scale_k * u_k``. Costs about one masked forward pass in all.

        Returns:
            the data blocks concatenated, ``(..., features)``.

        Example:
            >>> net = SemiAutoregressiveMLP(6, 3, noise_features=6, hidden_features=(12,))
            >>> z = torch.randn(5, 6)
            >>> x = net.generate(z)
            >>> torch.allclose(net(x, z), x, atol=1e-6)  # a fixed point of the full network
            True
        """
        if feedback is None and self.out_multiplier != 1:
            raise ValueError("generate needs feedback= when out_multiplier > 1")
        state = self.start(z, context, batch_shape=batch_shape)
        if feedback is None and self._native_step(state):
            return self._generate_native(state, z, context)
        blocks: list[Tensor] = []
        for k in range(self.blocks):
            out = self.step(state, blocks[-1] if blocks else None)
            blocks.append(out if feedback is None else feedback(k, out))
        return torch.cat(blocks, dim=-1)

    def zero_output_layer(self) -> None:
        """Set the output layer's weight and bias to 0 (a flow then starts at the identity map)."""
        output = self.layers[-1]
        with torch.no_grad():
            output.weight.zero_()
            if output.bias is not None:
                output.bias.zero_()
