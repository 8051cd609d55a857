"""Block-masked convolutions over image blocks and the semi-autoregressive conv network: the
fast path against the dense masked reference, the autograd contract, the exact dependency
structure (every earlier block, nothing later), and cached sampling."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from energyflow.nn.masked_conv import (
    BlockMaskedConv2d,
    SemiAutoregressiveConvNet,
    layers_for_grid,
)
from energyflow.ops.masked_conv import (
    block_masked_conv2d,
    from_blocks,
    tap_mask,
    to_blocks,
)
from tests.helpers import FUSED_BACKENDS, assert_close_scaled

MASKS = [("vertical", True), ("vertical", False), ("horizontal", True), ("horizontal", False)]


@pytest.mark.parametrize("stack,strict", MASKS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("grid", [(1, 1), (1, 3), (3, 1), (5, 7), (17, 3)])
def test_blocked_equals_dense_masked_reference(stack, strict, dtype, rtol, grid):
    for kernel_size, cin, cout in ((3, 1, 2), (5, 3, 4)):
        x = torch.randn(3, cin, *grid, dtype=dtype) * 10 + 100  # large offsets
        weight = torch.randn(cout, cin, kernel_size, kernel_size, dtype=dtype)  # garbage off-mask
        bias = torch.randn(cout, dtype=dtype)
        fast = block_masked_conv2d(x, weight, bias, stack=stack, strict=strict)
        masked = weight * tap_mask(kernel_size, stack, strict).to(dtype)
        dense = torch.nn.functional.conv2d(x, masked, bias, padding=kernel_size // 2)
        assert fast.shape == (3, cout, *grid)
        assert_close_scaled(fast, dense, rtol, f"{stack} strict={strict} k={kernel_size}")


needs_triton = pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="triton not available")


@needs_triton
@pytest.mark.parametrize("stack,strict", MASKS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_triton_kernel_equals_reference_with_gradients(stack, strict, dtype, rtol):
    """The Triton path (interpreted here) against the dense masked reference: values and all
    three gradients, odd grids (1 x 1, 2 x 9: rows not a multiple of the tiles), 5 x 5 kernels,
    channel counts beyond one tile (19 inputs, 17 outputs), large offsets."""
    for grid, kernel_size, cin, cout in (
        ((1, 1), 3, 1, 2),
        ((2, 9), 3, 19, 3),
        ((3, 4), 5, 2, 17),
    ):
        x = (torch.randn(2, cin, *grid, dtype=dtype) * 5 + 50).requires_grad_()
        weight = torch.randn(cout, cin, kernel_size, kernel_size, dtype=dtype, requires_grad=True)
        bias = torch.randn(cout, dtype=dtype, requires_grad=True)
        outs, grads = [], []
        for backend in ("triton", "reference"):
            out = block_masked_conv2d(x, weight, bias, stack=stack, strict=strict, backend=backend)
            outs.append(out)
            grads.append(torch.autograd.grad(out.square().sum(), [x, weight, bias]))
        assert_close_scaled(outs[0], outs[1], rtol, "value")
        for got, want, name in zip(grads[0], grads[1], ("x", "weight", "bias")):
            assert_close_scaled(got, want, 10 * rtol, name)


@needs_triton
@pytest.mark.parametrize("stack,strict", [("vertical", True), ("horizontal", False)])
def test_triton_gradcheck_and_any_order(stack, strict):
    """First and second derivatives by finite differences (fast mode: random projections; the
    interpreter runs every launch in NumPy), on a strict and a non-strict window (the values
    and gradients of all four are checked against the reference above)."""
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def conv(x, weight):
        return block_masked_conv2d(x, weight, stack=stack, strict=strict, backend="triton")

    assert gradcheck(conv, (x, weight), fast_mode=True)
    assert gradgradcheck(conv, (x, weight), fast_mode=True)


@needs_triton
def test_triton_layouts_and_tf32_tolerance_path():
    """Any strided input gives the contiguous input's values; torch's "high" fp32 matmul
    precision selects tf32 tiles, held to tf32 tolerance (the interpreter computes tl.dot in
    full fp32; benchmarks/gpu_check.sh checks the bound on a GPU)."""
    base = torch.randn(3, 4, 5, 6)
    weight = torch.randn(5, 4, 3, 3)
    layouts = (
        torch.empty(3, 4, 6, 5).transpose(2, 3).copy_(base),  # transposed
        base.contiguous(memory_format=torch.channels_last),
        torch.empty(3, 8, 5, 6)[:, ::2].copy_(base),  # sliced
        base[:1].expand(3, -1, -1, -1),  # expanded
    )
    for x in layouts:
        want = block_masked_conv2d(
            x.contiguous(), weight, stack="vertical", strict=False, backend="reference"
        )
        got = block_masked_conv2d(x, weight, stack="vertical", strict=False, backend="triton")
        assert_close_scaled(got, want, 2e-5, "layout")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        got = block_masked_conv2d(base, weight, stack="vertical", strict=False, backend="triton")
    finally:
        torch.set_float32_matmul_precision(previous)
    want = block_masked_conv2d(
        base.double(), weight.double(), stack="vertical", strict=False, backend="reference"
    )
    assert_close_scaled(got, want, 5e-3, "tf32")


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    from energyflow.ops import dispatch

    monkeypatch.setattr(dispatch, "triton_interpreted", lambda: False)
    x, w = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3)
    with pytest.raises(ValueError, match="CUDA"):
        block_masked_conv2d(x, w, stack="vertical", strict=True, backend="triton")


def test_tap_masks_are_the_documented_windows():
    assert tap_mask(3, "vertical", True).tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert tap_mask(3, "vertical", False).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert tap_mask(3, "horizontal", True).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert tap_mask(5, "horizontal", False)[2].tolist() == [1, 1, 1, 0, 0]
    assert tap_mask(5, "horizontal", False).sum() == 3


@pytest.mark.parametrize(
    "layout",
    ["channels_last", "transposed", "sliced", "expanded"],
)
def test_any_strided_layout(layout):
    base = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "sliced": torch.randn(4, 6, 12, 6, dtype=torch.float64)[:, ::2, ::2],
        "expanded": base[:1].expand(4, -1, -1, -1),
    }[layout]
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    for stack, strict in MASKS:
        got = block_masked_conv2d(x, weight, stack=stack, strict=strict)
        want = block_masked_conv2d(x.contiguous(), weight, stack=stack, strict=strict)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stack,strict", MASKS)
def test_gradcheck_and_double_backward(stack, strict):
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def conv(x, weight, bias):
        return block_masked_conv2d(x, weight, bias, stack=stack, strict=strict)

    assert gradcheck(conv, (x, weight, bias))
    assert gradgradcheck(conv, (x, weight, bias))
    # masked taps get no gradient, on both paths
    conv(x, weight, bias).sum().backward()
    masked_out = tap_mask(3, stack, strict) == 0
    assert (weight.grad[:, :, masked_out] == 0).all()


def test_compile_and_func_match_eager():
    x = torch.randn(2, 3, 4, 5)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)

    def loss(weight):
        return block_masked_conv2d(x, weight, stack="vertical", strict=False).square().sum()

    eager = torch.func.grad(loss)(weight)
    weight.grad = None
    loss(weight).backward()
    torch.testing.assert_close(eager, weight.grad)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    weight.grad = None
    compiled(weight).backward()
    torch.testing.assert_close(weight.grad, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["blocked", "reference"])
def test_autocast_runs_in_its_dtype_like_conv2d(backend):
    """Inside autocast a bf16 input (a layer's output there) and an fp32 weight run in bf16, as
    ``F.conv2d`` does (the masked convolution refused the mixed dtypes before), and the fp32
    weight gets an fp32 gradient."""
    x = torch.randn(3, 4, 5, 6).bfloat16().float()
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    exact = block_masked_conv2d(x, weight, bias, stack="vertical", strict=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block_masked_conv2d(
            x.bfloat16(), weight, bias, stack="vertical", strict=True, backend=backend
        )
        plain = torch.nn.functional.conv2d(x.bfloat16(), weight)
    assert low.dtype == plain.dtype == torch.bfloat16
    assert_close_scaled(low.float(), exact, rtol=2e-2)
    low.float().sum().backward()
    assert weight.grad.dtype == torch.float32 and bias.grad.dtype == torch.float32
    assert (weight.grad[:, :, tap_mask(3, "vertical", True) == 0] == 0).all()
    torch.testing.assert_close(bias.grad, torch.full((8,), 3.0 * 5 * 6))


def test_conv_errors_name_the_argument():
    x, w = torch.randn(2, 3, 4, 4), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="odd"):
        block_masked_conv2d(x, torch.randn(4, 3, 4, 4), stack="vertical", strict=True)
    with pytest.raises(ValueError, match="stack"):
        block_masked_conv2d(x, w, stack="diagonal", strict=True)
    with pytest.raises(ValueError, match="channels"):
        block_masked_conv2d(torch.randn(2, 2, 4, 4), w, stack="vertical", strict=True)
    with pytest.raises(TypeError, match="dtype"):
        block_masked_conv2d(x.double(), w, stack="vertical", strict=True)
    with pytest.raises(ValueError, match="batch, channels, rows, cols"):
        block_masked_conv2d(x[0], w, stack="vertical", strict=True)
    with pytest.raises(ValueError, match="backend"):
        block_masked_conv2d(x, w, stack="vertical", strict=True, backend="cuda")
    with pytest.raises(ValueError, match="bias"):
        block_masked_conv2d(x, w, torch.randn(3), stack="vertical", strict=True)
    with pytest.raises(ValueError, match="divide"):
        to_blocks(torch.randn(1, 1, 6, 6), 4)


def test_blocks_round_trip_and_order():
    images = torch.randn(2, 3, 8, 12)
    grid = to_blocks(images, 4)
    assert grid.shape == (2, 48, 2, 3)
    torch.testing.assert_close(from_blocks(grid, 4), images)
    # cell (1, 2) holds the pixels of block (1, 2), channel c p^2 + u p + v
    assert torch.equal(grid[0, 16 + 5, 1, 2], images[0, 1, 4 + 1, 8 + 1])


def test_layer_initialised_over_allowed_taps_only():
    conv = BlockMaskedConv2d(6, 5, 3, stack="horizontal", strict=False)
    assert (conv.weight[:, :, tap_mask(3, "horizontal", False) == 0] == 0).all()
    assert conv.weight.abs().max() <= 1 / (6 * 2) ** 0.5
    assert "taps=2/9" in repr(conv)


def _dependence(net, grid, x_channels, z_channels, context=None, draws=4):
    """|d out block / d x block| and |d out / d z| summed over draws: (K, K) each."""
    cells = grid[0] * grid[1]
    jx = torch.zeros(cells, cells, dtype=torch.float64)
    jz = torch.zeros(cells, cells, dtype=torch.float64)
    for _ in range(draws):
        x = torch.randn(1, x_channels, *grid, dtype=torch.float64)
        z = torch.randn(1, z_channels, *grid, dtype=torch.float64)
        dx = torch.autograd.functional.jacobian(lambda x: net(x, z, context), x)
        dz = torch.autograd.functional.jacobian(lambda z: net(x, z, context), z)
        jx += dx.abs().sum((0, 1, 4, 5)).reshape(cells, cells)
        jz += dz.abs().sum((0, 1, 4, 5)).reshape(cells, cells)
    return jx, jz


@pytest.mark.parametrize("grid", [(1, 1), (1, 4), (4, 1), (3, 5), (4, 4), (7, 7)])
def test_exact_block_dependencies(grid):
    """Output block k depends on every data block before k and no other, on the noise of every
    block up to k, for the default depth (``layers_for_grid``) of non-square grids too."""
    layers = layers_for_grid(*grid)
    net = SemiAutoregressiveConvNet(2, 3, hidden_channels=6, layers=layers).double()
    jx, jz = _dependence(net, grid, 2, 3)
    cells = grid[0] * grid[1]
    earlier = torch.ones(cells, cells).tril(-1).bool()
    assert torch.equal(jx != 0, earlier)
    assert torch.equal(jz != 0, earlier | torch.eye(cells, dtype=torch.bool))


def test_too_shallow_network_misses_far_blocks():
    net = SemiAutoregressiveConvNet(1, 1, hidden_channels=6, layers=1).double()
    jx, _ = _dependence(net, (4, 4), 1, 1)
    earlier = torch.ones(16, 16).tril(-1).bool()
    assert not (jx != 0)[~earlier].any()  # never a later block
    assert (jx[earlier] == 0).any()  # and, this shallow, not every earlier one


@pytest.mark.parametrize("backend", ["blocked", "reference"])
def test_backends_agree(backend):
    torch.manual_seed(3)
    net = SemiAutoregressiveConvNet(4, 2, hidden_channels=8, context_features=3).double()
    other = SemiAutoregressiveConvNet(
        4, 2, hidden_channels=8, context_features=3, backend=backend
    ).double()
    other.load_state_dict(net.state_dict())
    x, z = torch.randn(5, 4, 3, 4).double(), torch.randn(5, 2, 3, 4).double()
    c = torch.randn(5, 3).double()
    torch.testing.assert_close(other(x, z, c), net(x, z, c), rtol=1e-12, atol=1e-12)


def _generate_by_full_passes(net, z, context, feedback):
    """The uncached definition: K full passes, block k taken from pass k."""
    rows, cols = z.shape[2:]
    x = torch.zeros(len(z), net.block_channels, rows, cols, dtype=z.dtype)
    for k in range(rows * cols):
        i, j = divmod(k, cols)
        out = feedback(net(x, z, context)[:, :, i, j])
        mask = torch.zeros(rows, cols, dtype=z.dtype)
        mask[i, j] = 1
        x = x * (1 - mask) + out[:, :, None, None] * mask
    return x


@pytest.mark.parametrize("grid,kernel_size", [((1, 1), 3), ((3, 5), 3), ((5, 3), 5), ((4, 4), 3)])
def test_cached_generate_equals_full_passes_with_gradients(grid, kernel_size):
    net = SemiAutoregressiveConvNet(
        3, 2, hidden_channels=5, layers=3, kernel_size=kernel_size, context_features=2
    ).double()
    z = torch.randn(4, 2, *grid, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    cached = net.generate(z, c, feedback=torch.tanh)
    slow = _generate_by_full_passes(net, z, c, torch.tanh)
    torch.testing.assert_close(cached, slow, rtol=1e-12, atol=1e-12)
    # a fixed point of the full pass, and the same gradients as the uncached definition
    torch.testing.assert_close(torch.tanh(net(cached, z, c)), cached, rtol=1e-12, atol=1e-12)
    weights, parameters = torch.randn_like(cached), list(net.parameters())
    # (taps that read only outside the grid, as on a 1 x 1 grid, are not in the cached graph)
    fast_grads = torch.autograd.grad((cached * weights).sum(), parameters, allow_unused=True)
    slow_grads = torch.autograd.grad((slow * weights).sum(), parameters)
    for fast, slow_grad in zip(fast_grads, slow_grads):
        fast = torch.zeros_like(slow_grad) if fast is None else fast
        torch.testing.assert_close(fast, slow_grad, rtol=1e-10, atol=1e-12)


def test_generate_fp32_and_progress():
    net = SemiAutoregressiveConvNet(4, 4, hidden_channels=16)
    z = torch.randn(33, 4, 3, 3)
    seen = []
    with torch.no_grad():
        x = net.generate(z, progress=seen.append)
    assert seen == list(range(9))
    torch.testing.assert_close(net(x, z), x, rtol=1e-4, atol=1e-5)


def test_network_errors():
    net = SemiAutoregressiveConvNet(2, 1, hidden_channels=4, context_features=2)
    z = torch.randn(3, 1, 2, 2)
    with pytest.raises(ValueError, match="context"):
        net(torch.randn(3, 2, 2, 2), z)
    with pytest.raises(ValueError, match="z must be"):
        net.generate(torch.randn(3, 2, 2, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(3, 2, 2, 3), z, torch.randn(3, 2))
    with pytest.raises(ValueError, match="layers"):
        SemiAutoregressiveConvNet(2, 1, layers=0)
