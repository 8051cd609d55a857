"""Block-masked layers and the semi-autoregressive MLP: masks, paths, stepping, errors."""
from __future__ import annotations

import pytest
import torch
from conftest import FUSED_BACKENDS
from helpers import assert_close_scaled

from energyflow.masks import MaskPlan, split_sizes
from energyflow.nn import BlockMaskedLinear, SemiAutoregressiveMLP

PATHS = ["blocked"] + (["triton"] if "triton" in FUSED_BACKENDS else [])
ACTS = [None, "relu", "gelu", "silu", "tanh", "elu"]


def _levels(sizes):
    return [level for level, size in enumerate(sizes) for _ in range(size)]


def test_mask_plan_prefix_and_suffix():
    plan = MaskPlan.build([0, 0, 1, 2, 2], [0, 1, 1, 2, 3], strict=True)
    assert plan.prefix.tolist() == [0, 2, 2, 3, 5]
    assert plan.first_out.tolist() == [1, 1, 3, 4, 4]
    want = torch.tensor([[i < o for i in [0, 0, 1, 2, 2]] for o in [0, 1, 1, 2, 3]], dtype=torch.float32)
    assert torch.equal(plan.mask(), want)
    loose = MaskPlan.build([0, 0, 1, 2, 2], [0, 1, 1, 2, 3], strict=False)
    assert loose.prefix.tolist() == [2, 3, 3, 5, 5]
    assert plan.out_groups == ((0, 1, 0), (1, 3, 2), (3, 4, 3), (4, 5, 5))
    # the tiles cover exactly the allowed entries, once each
    cover = torch.zeros(5, 5)
    for r0, r1, c0, c1 in plan.tiles:
        cover[r0:r1, c0:c1] += 1
    assert torch.equal(cover, plan.mask())


@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 16])
def test_staircase_tiles_cover_the_mask(k):
    plan = MaskPlan.build(_levels([3] * k), _levels([2] * k), strict=False)
    cover = torch.zeros(plan.out_features, plan.in_features)
    for r0, r1, c0, c1 in plan.tiles:
        cover[r0:r1, c0:c1] += 1
    assert torch.equal(cover, plan.mask())
    assert len(plan.tiles) <= 2 * k - 1


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_paths_match_reference(backend, activation, dtype):
    # uneven levels, tiles straddling level boundaries (interpreter tiles are 16 wide)
    in_levels = _levels([3, 17, 1, 20])
    out_levels = _levels([5, 2, 19, 11])
    for strict in (True, False):
        layer = BlockMaskedLinear(in_levels, out_levels, strict=strict, activation=activation).to(dtype)
        x = torch.randn(2, 19, len(in_levels), dtype=dtype, requires_grad=True)
        seed = torch.randn(2, 19, len(out_levels), dtype=dtype)
        results = {}
        for path in ("reference", backend):
            layer.backend = path
            out = layer(x)
            grads = torch.autograd.grad((out * seed).sum(), [x, layer.weight, layer.bias])
            results[path] = [out, *grads]
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        for name, got, want in zip(["out", "x", "weight", "bias"], results[backend], results["reference"]):
            assert_close_scaled(got.detach(), want.detach(), rtol, f"{backend} {name}")
        masked = layer.plan.mask() == 0
        assert (results[backend][2][masked] == 0).all(), "masked weights got gradient"


@pytest.mark.parametrize("backend", ["blocked", "reference"] + PATHS[1:])
def test_layer_gradcheck(backend):
    layer = BlockMaskedLinear(_levels([2, 3, 2]), _levels([1, 3, 2, 2]), strict=True, activation="tanh",
                              backend=backend).double()
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _functional(layer, x, w, b), (x, layer.weight, layer.bias))


def _functional(layer, x, w, b):
    return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))


def _jacobian_dependencies(net, x, z, c):
    """|d out / d inputs| > 0 per (output, input) of one sample, inputs ordered (x, z, c)."""
    def f(v):
        xs, zs, cs = v.split([x.shape[-1], z.shape[-1] if z is not None else 0, c.shape[-1] if c is not None else 0])
        return net(xs[None], zs[None] if z is not None else None, cs[None] if c is not None else None)[0]
    parts = [x[0]] + ([z[0]] if z is not None else []) + ([c[0]] if c is not None else [])
    return torch.autograd.functional.jacobian(f, torch.cat(parts)).abs() > 0


CONFIGS = [
    dict(features=5, blocks=1, noise_features=2, context_features=0, hidden_features=(8,)),
    dict(features=5, blocks=2, noise_features=0, context_features=3, hidden_features=(8, 8)),
    dict(features=7, blocks=[3, 1, 3], noise_features=[1, 0, 2], context_features=2, hidden_features=(9, 12, 10)),
    dict(features=4, blocks=4, noise_features=4, context_features=0, hidden_features=(8, 8), residual=True),
    dict(features=6, blocks=3, noise_features=5, context_features=1, hidden_features=(16,), out_multiplier=2),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_semi_autoregressive_property(config):
    net = SemiAutoregressiveMLP(**config).double()
    for layer in net.layers:  # random non-zero weights where allowed, so zeros come from masks alone
        torch.nn.init.normal_(layer.weight)
        layer.weight.data *= layer.plan.mask(torch.float64)
    x = torch.randn(1, net.features, dtype=torch.float64)
    z = torch.randn(1, net.noise_features, dtype=torch.float64) if net.noise_features else None
    c = torch.randn(1, net.context_features, dtype=torch.float64) if net.context_features else None
    deps = _jacobian_dependencies(net, x, z, c)
    block_of_feature = torch.tensor(_levels(net.block_sizes))
    block_of_noise = torch.tensor(_levels(net.noise_sizes)) if net.noise_features else torch.zeros(0, dtype=torch.long)
    out_block = block_of_feature.repeat_interleave(net.out_multiplier)
    allowed = torch.cat([
        out_block[:, None] > block_of_feature[None, :],
        out_block[:, None] >= block_of_noise[None, :],
        torch.ones(len(out_block), net.context_features, dtype=torch.bool),
    ], dim=1)
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
    c = torch.randn(3, 2, net.context_features, dtype=torch.float64) if net.context_features else None
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


def test_stepping_is_differentiable():
    net = SemiAutoregressiveMLP(4, 2, noise_features=2, hidden_features=(8,)).double()
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    state = net.start(z)
    first = net.step(state)
    second = net.step(state, first[:, :2])
    (grad,) = torch.autograd.grad(second.sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_net_gradcheck_blocked():
    net = SemiAutoregressiveMLP(3, 3, noise_features=3, hidden_features=(6,), activation="tanh").double()
    x, z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, dtype=torch.float64)
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
        (lambda: SemiAutoregressiveMLP(4, 2, noise_features=[1, 1, 1]), "blocks"),
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


def test_split_sizes():
    assert split_sizes(7, 3, "blocks") == [3, 2, 2]
    assert split_sizes(7, [1, 6], "blocks") == [1, 6]


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")
@pytest.mark.parametrize("dtype", [torch.float16])
def test_triton_layer_half_inputs_accumulate_in_fp32(dtype):
    """fp16 only on the CPU: the Triton interpreter's bf16 tl.dot is wrong (a 16 x 16 bf16
    product came out 2.7e10 off with triton 3.9), so bf16 is checked by gpu_check.sh instead."""
    layer = BlockMaskedLinear(_levels([5, 12]), _levels([3, 9, 6]), strict=True, activation="gelu", backend="triton")
    x = torch.randn(21, 17)
    ref_out = layer(x.to(dtype).float())  # triton on fp32 copies of the rounded inputs
    half = layer.to(dtype)
    xh = x.to(dtype).requires_grad_()
    out = half(xh)
    assert out.dtype == dtype
    assert_close_scaled(out.float(), ref_out.detach(), 2e-2, "half forward")
    (grad,) = torch.autograd.grad(out.float().sum(), xh)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")
def test_triton_level_slice_launch():
    layer = BlockMaskedLinear(_levels([4, 4, 4]), _levels([5, 6, 7]), strict=False, activation="silu", backend="triton").double()
    x = torch.randn(9, 12, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)
        for level in range(3):
            start, end = layer.plan.level_rows(level)
            sliced = layer.forward_level(x[:, : int(layer.plan.prefix[end - 1])], level)
            assert_close_scaled(sliced, full[:, start:end], 1e-12, f"level {level}")
