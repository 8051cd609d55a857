"""SemiAutoregressiveMLP and BlockMaskedLinear as modules: the autoregressive property, cached
stepping and generate, gradients, and bad configurations or calls."""

from __future__ import annotations

import pytest
import torch

from energyflow.nn import BlockMaskedLinear, SemiAutoregressiveMLP
from helpers import FUSED_BACKENDS, assert_close_scaled, levels

PATHS = ["blocked"] + (["triton"] if "triton" in FUSED_BACKENDS else [])


def _jacobian_dependencies(net, x, z, c):
    """|d out / d inputs| > 0 per (output, input) of one sample, inputs ordered (x, z, c)."""

    def f(v):
        xs, zs, cs = v.split(
            [x.shape[-1], z.shape[-1] if z is not None else 0, c.shape[-1] if c is not None else 0]
        )
        return net(
            xs[None], zs[None] if z is not None else None, cs[None] if c is not None else None
        )[0]

    parts = [x[0]] + ([z[0]] if z is not None else []) + ([c[0]] if c is not None else [])
    return torch.autograd.functional.jacobian(f, torch.cat(parts)).abs() > 0


CONFIGS = [
    dict(features=5, blocks=1, noise_features=2, context_features=0, hidden_features=(8,)),
    dict(features=5, blocks=2, noise_features=0, context_features=3, hidden_features=(8, 8)),
    dict(
        features=7,
        blocks=[3, 1, 3],
        noise_features=3,
        context_features=2,
        hidden_features=(9, 12, 10),
    ),
    dict(
        features=4,
        blocks=4,
        noise_features=4,
        context_features=0,
        hidden_features=(8, 8),
        residual=True,
    ),
    dict(
        features=6,
        blocks=3,
        noise_features=5,
        context_features=1,
        hidden_features=(16,),
        out_multiplier=2,
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_semi_autoregressive_property(config):
    # tanh: no dead units, so every permitted dependency shows in the Jacobian whatever the seed
    net = SemiAutoregressiveMLP(**config, activation="tanh").double()
    for (
        layer
    ) in net.layers:  # random non-zero weights where allowed, so zeros come from masks alone
        torch.nn.init.normal_(layer.weight)
        layer.weight.data *= layer.plan.mask(torch.float64)
    x = torch.randn(1, net.features, dtype=torch.float64)
    z = torch.randn(1, net.noise_features, dtype=torch.float64) if net.noise_features else None
    c = torch.randn(1, net.context_features, dtype=torch.float64) if net.context_features else None
    deps = _jacobian_dependencies(net, x, z, c)
    block_of_feature = torch.tensor(levels(net.block_sizes))
    block_of_noise = (
        torch.tensor(levels(net.noise_sizes))
        if net.noise_features
        else torch.zeros(0, dtype=torch.long)
    )
    out_block = block_of_feature.repeat_interleave(net.out_multiplier)
    allowed = torch.cat(
        [
            out_block[:, None] > block_of_feature[None, :],
            out_block[:, None] >= block_of_noise[None, :],
            torch.ones(len(out_block), net.context_features, dtype=torch.bool),
        ],
        dim=1,
    )
    assert not (deps & ~allowed).any(), "an output depends on an input the mask forbids"
    assert deps[allowed].any(), "no permitted dependency at all"
    if net.blocks > 1:  # the last block sees earlier data
        last = out_block == net.blocks - 1
        assert deps[last][:, : net.features].any()


@pytest.mark.parametrize("backend", ["blocked", "reference"] + PATHS[1:])
@pytest.mark.parametrize("config", CONFIGS[2:])
def test_cached_stepping_equals_full_forward(backend, config):
    net = SemiAutoregressiveMLP(**config, backend=backend).double()
    x = torch.randn(3, 2, net.features, dtype=torch.float64)
    z = torch.randn(3, 2, net.noise_features, dtype=torch.float64) if net.noise_features else None
    c = (
        torch.randn(3, 2, net.context_features, dtype=torch.float64)
        if net.context_features
        else None
    )
    with torch.no_grad():
        full = net(x, z, c)
        state = net.start(z, c, batch_shape=(3, 2))
        pieces, previous, offset = [], None, 0
        for size in net.block_sizes:
            pieces.append(net.step(state, previous))
            previous, offset = x[..., offset : offset + size], offset + size
    stepped = torch.cat(pieces, dim=-1)
    assert stepped.shape == full.shape
    assert_close_scaled(stepped, full, 1e-12, "stepped vs full")


@pytest.mark.parametrize("backend", ["blocked", "reference"] + PATHS[1:])
def test_generate_gives_a_fixed_point_of_the_full_network(backend):
    net = SemiAutoregressiveMLP(
        7, [3, 1, 3], noise_features=4, context_features=2, hidden_features=(9, 12)
    )
    net = net.double()
    net.backend = backend
    z = torch.randn(5, 4, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        x = net.generate(z, c)
        assert x.shape == (5, 7)
        assert_close_scaled(net(x, z, c), x, 1e-12, "generate")


def test_generate_feedback_maps_outputs_to_data_blocks():
    """With out_multiplier 2, feedback turns each block's (a, b) pairs into a + b * u."""
    net = SemiAutoregressiveMLP(5, 2, context_features=1, hidden_features=(8,), out_multiplier=2)
    net = net.double()
    u = torch.randn(4, 5, dtype=torch.float64)
    c = torch.randn(4, 1, dtype=torch.float64)
    u_blocks = u.split(net.block_sizes, dim=-1)

    def feedback(k, params):
        pairs = params.reshape(*params.shape[:-1], -1, 2)
        return pairs[..., 0] + pairs[..., 1] * u_blocks[k]

    x = net.generate(None, c, feedback=feedback)
    pairs = net(x, None, c).reshape(4, 5, 2)
    assert_close_scaled(pairs[..., 0] + pairs[..., 1] * u, x, 1e-12, "feedback")
    with pytest.raises(ValueError, match="feedback"):
        net.generate(None, c)


def test_stepping_is_differentiable():
    net = SemiAutoregressiveMLP(4, 2, noise_features=2, hidden_features=(8,)).double()
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    state = net.start(z)
    first = net.step(state)
    second = net.step(state, first[:, :2])
    (grad,) = torch.autograd.grad(second.sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_net_gradcheck_blocked():
    net = SemiAutoregressiveMLP(
        3, 3, noise_features=3, hidden_features=(6,), activation="tanh"
    ).double()
    x, z = (
        torch.randn(2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 3, dtype=torch.float64),
    )
    assert torch.autograd.gradcheck(lambda x: net(x, z), (x,))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: BlockMaskedLinear([0, 2, 1], [1, 2], strict=True), "non-decreasing"),
        (lambda: BlockMaskedLinear([0, 1], [[1, 2]], strict=True), "1-D"),
        (lambda: BlockMaskedLinear([0, 1], [1, 2], strict=True, activation="swish"), "activation"),
        (lambda: BlockMaskedLinear([0, 1], [1, 2], strict=True, backend="cuda"), "backend"),
        (lambda: SemiAutoregressiveMLP(5, [2, 2]), "sum to 5"),
        (lambda: SemiAutoregressiveMLP(3, 4), "exceeds"),
        (
            lambda: SemiAutoregressiveMLP(4, 2, noise_features=[1, 1]),
            "noise_features must be an int",
        ),
        (lambda: SemiAutoregressiveMLP(4, 2, noise_features=-1), "noise_features must be an int"),
        (lambda: SemiAutoregressiveMLP(4, 4, hidden_features=(3,)), "hidden_features"),
        (lambda: SemiAutoregressiveMLP(4, 2, activation="none"), "activation"),
    ],
)
def test_bad_configuration(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_bad_call_shapes():
    net = SemiAutoregressiveMLP(4, 2, noise_features=2, context_features=3, hidden_features=(8,))
    x, z, c = torch.randn(5, 4), torch.randn(5, 2), torch.randn(5, 3)
    with pytest.raises(ValueError, match="x must have 4 features"):
        net(torch.randn(5, 3), z, c)
    with pytest.raises(ValueError, match="context is required"):
        net(x, z)
    with pytest.raises(ValueError, match="context must have 3 features"):
        net(x, z, torch.randn(5, 2))
    with pytest.raises(ValueError, match="context has leading shape"):
        net(x, z, torch.randn(4, 3))
    with pytest.raises(ValueError, match="z is required"):
        net(x, None, c)
    layer = BlockMaskedLinear([0, 1], [1, 2], strict=True)
    with pytest.raises(ValueError, match="2 features"):
        layer(torch.randn(3, 5))
    state = net.start(z, c)
    net.step(state)
    with pytest.raises(ValueError, match="x_prev must have 2 features"):
        net.step(state, torch.randn(5, 3))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "tanh", "elu"])
def test_cached_steps_computed_in_place_equal_the_full_network(activation):
    """Without autograd every step writes its units straight into the cache (the activation in
    place); with autograd the slices are kept apart. Both equal the full network."""
    net = SemiAutoregressiveMLP(
        6, [1, 3, 2], noise_features=5, context_features=2, hidden_features=(9, 9),
        activation=activation, residual=True,
    ).double()  # fmt: skip
    z = torch.randn(4, 5, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        fast = net.generate(z, c)
    kept = net.generate(z, c)
    assert kept.requires_grad and torch.equal(fast, kept.detach())
    with torch.no_grad():
        assert_close_scaled(net(fast, z, c), fast, 1e-12, activation)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("hidden", [37, 93])
@pytest.mark.parametrize("rows", [131, 5])
def test_the_extensions_generate_and_steps_equal_the_python_steps(
    monkeypatch, activation, residual, hidden, rows
):
    """fp32 on the C++ extension: relu networks with at most 16 units a level generate all steps
    in row tiles (131 rows: tiles of 64, 64 and 3, an odd row pair), others all rows a step at
    a time in the same call (the row kernel for narrow slices, addmm for wider ones), and
    ``step`` makes a call per step; all equal the same steps in Python, and the generated
    samples are a fixed point of the network. Uneven levels: prefixes that are not multiples of
    8, levels of 1 to 11 units and of 18 and 19; at 5 rows the row kernel takes the wide slices
    too."""
    from energyflow.ops import dispatch

    if not dispatch.cpp_available():
        pytest.skip("the C++ extension is not built")
    torch.manual_seed(3)
    net = SemiAutoregressiveMLP(
        13, [1, 5, 2, 4, 1], noise_features=9, context_features=3,
        hidden_features=(hidden, hidden),
        activation=activation, residual=residual,
    )  # fmt: skip
    z, c = torch.randn(rows, 9), torch.randn(rows, 3)
    with torch.no_grad():
        native = net.generate(z, c)
        stepped = [net.step(state := net.start(z, c))]
        for _ in range(net.blocks - 1):
            stepped.append(net.step(state, stepped[-1]))
        monkeypatch.setattr(dispatch, "cpp_available", lambda: False)
        python = net.generate(z, c)
        assert_close_scaled(native, python, 1e-5, "native generate")
        assert_close_scaled(torch.cat(stepped, -1), python, 1e-5, "native steps")
        assert_close_scaled(net(native, z, c), native, 1e-5, "fixed point")
