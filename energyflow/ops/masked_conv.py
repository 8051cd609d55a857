"""Block-masked 2-D convolutions over a grid of pixel blocks (docs/math.md, section 9).

An image (C, H, W) cut into p x p blocks is a grid (C p^2, H/p, W/p), one cell per block
(``to_blocks`` / ``from_blocks``: pixel unshuffle and shuffle). Blocks are generated in raster
order over the grid. A block-masked convolution of odd ``kernel_size`` k = 2r + 1 lets the
output cell (i, j) see only the input cells (i + di, j + dj) its mask allows:

    stack         strict   taps (di, dj)                       the window
    "vertical"    True     -r <= di <= -1, -r <= dj <= r       rows above (r x k)
    "vertical"    False    -r <= di <= 0,  -r <= dj <= r       and its own row ((r + 1) x k)
    "horizontal"  True     di = 0,         -r <= dj <= -1      cells to its left (1 x r)
    "horizontal"  False    di = 0,         -r <= dj <= 0       and itself (1 x (r + 1))

Stacked as in Gated PixelCNN (``energyflow.nn.SemiAutoregressiveConvNet``), a vertical stack
that sees only rows above and a horizontal stack that sees its own row to the left together
see every earlier block, with no blind spot.

Every allowed window is a rectangle, so the masked convolution equals a dense convolution with
the window's sub-kernel on the input shifted by the window's corner:

    y = conv2d(pad(x, left=-dj0, right=dj1, top=-di0, bottom=di1), W[:, :, r+di0 : r+di1+1,
                                                                      r+dj0 : r+dj1+1]) + b

(a negative pad crops). That is the ``"blocked"`` path (the CPU's): it computes only the
allowed taps (vertical 6/9 or 3/9 of a 3 x 3 kernel, horizontal 2/9 or 1/9) through torch's own
convolution, so it keeps every autograd promise of ``F.conv2d`` (double backward,
``torch.compile``, ``torch.func``, any layout). ``"triton"`` (CUDA's, ``energyflow.kernels``)
runs the window as an implicit GEMM on channels-last tensors: forward and input gradient by one
kernel (the input gradient is the window convolution of the output gradient with the window
flipped and transposed), the weight gradient tap by tap; the derivatives are written with the
same two operations, so double backward works to any order. ``"reference"`` is the dense
masked convolution a user writes, ``conv2d(x, W * mask, padding=r)``. Weights at masked taps
are never read by any of them. ``"auto"`` is Triton on CUDA (where installed), else blocked.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from energyflow.ops import dispatch

__all__ = [
    "CONV_BACKENDS",
    "STACKS",
    "block_masked_conv2d",
    "from_blocks",
    "tap_mask",
    "tap_window",
    "to_blocks",
    "window_weight",
]

STACKS = ("vertical", "horizontal")
CONV_BACKENDS = dispatch.MASKED_BACKENDS  # "auto", "triton", "blocked", "reference"


def _check_kernel(kernel_size: int, stack: str) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3:
        raise ValueError(f"kernel_size must be an odd int >= 3, got {kernel_size!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a centre tap), got {kernel_size}")
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
    return kernel_size // 2


def tap_window(kernel_size: int, stack: str, strict: bool) -> tuple[int, int, int, int]:
    """The allowed taps as offsets ``(di0, di1, dj0, dj1)``, inclusive (table above).

    Example:
        >>> tap_window(3, "vertical", True), tap_window(3, "horizontal", False)
        ((-1, -1, -1, 1), (0, 0, -1, 0))
    """
    r = _check_kernel(kernel_size, stack)
    if stack == "vertical":
        return -r, -1 if strict else 0, -r, r
    return 0, 0, -r, -1 if strict else 0


def tap_mask(kernel_size: int, stack: str, strict: bool) -> Tensor:
    """The (k, k) 0/1 mask of the allowed taps (float32), centre at (r, r).

    Example:
        >>> tap_mask(3, "horizontal", False)
        tensor([[0., 0., 0.],
                [1., 1., 0.],
                [0., 0., 0.]])
    """
    di0, di1, dj0, dj1 = tap_window(kernel_size, stack, strict)
    r = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[r + di0 : r + di1 + 1, r + dj0 : r + dj1 + 1] = 1.0
    return mask


def window_weight(weight: Tensor, stack: str, strict: bool) -> Tensor:
    """The sub-kernel (out, in, rows, cols) of ``weight`` (out, in, k, k) over the allowed taps
    (a view)."""
    di0, di1, dj0, dj1 = tap_window(weight.shape[-1], stack, strict)
    r = weight.shape[-1] // 2
    return weight[:, :, r + di0 : r + di1 + 1, r + dj0 : r + dj1 + 1]


def _check_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("x and weight must be tensors")
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, channels, rows, cols), got shape {tuple(x.shape)}")
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must be (out, in, k, k), got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels but weight expects {weight.shape[1]} (dim 1 of weight)"
        )
    if not x.is_floating_point() or x.dtype != weight.dtype:
        raise TypeError(
            f"x and weight must share one floating dtype, got {x.dtype} and {weight.dtype}"
        )
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight on {weight.device}; move one of them")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got shape {tuple(bias.shape)}")


def block_masked_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stack: str,
    strict: bool,
    backend: str = "auto",
) -> Tensor:
    """Block-masked convolution over a block grid (module docstring; same size out as in).

        y[b, o, i, j] = bias[o]
                        + sum_{c, (di, dj) allowed} W[o, c, r + di, r + dj] x[b, c, i + di, j + dj]

    Args:
        x: (B, C_in, rows, cols) block grid (any strides).
        weight: (C_out, C_in, k, k), k odd; masked taps are ignored.
        bias: (C_out,) or None.
        stack, strict: the mask (module docstring).
        backend: "auto" (Triton on CUDA, else blocked), "triton" (CUDA, or the interpreter),
            "blocked" (allowed taps only, torch's convolution) or "reference" (dense masked
            convolution).

    Returns:
        (B, C_out, rows, cols).

    Example:
        >>> x, w = torch.randn(2, 3, 4, 5), torch.randn(6, 3, 3, 3)
        >>> fast = block_masked_conv2d(x, w, stack="vertical", strict=True)
        >>> dense = block_masked_conv2d(x, w, stack="vertical", strict=True, backend="reference")
        >>> torch.allclose(fast, dense, atol=1e-5)
        True
    """
    if isinstance(x, Tensor) and isinstance(weight, Tensor):  # under autocast: its dtype
        x, weight, bias = dispatch.autocast_inputs(x, weight, bias)
    _check_conv(x, weight, bias)
    backend = dispatch.resolve_masked(backend, x.device)
    di0, di1, dj0, dj1 = tap_window(weight.shape[-1], stack, strict)
    if backend == "reference":
        mask = tap_mask(weight.shape[-1], stack, strict).to(weight)
        return F.conv2d(x, weight * mask, bias, padding=weight.shape[-1] // 2)
    window = window_weight(weight, stack, strict)
    if backend == "triton":
        out = _WindowConv.apply(x, window, di0, dj0)
        return out if bias is None else out + bias[:, None, None]
    shifted = F.pad(x, (-dj0, dj1, -di0, di1))
    return F.conv2d(shifted, window, bias)


def _channels_last(x: Tensor) -> Tensor:
    """(B, C, H, W) -> a contiguous (B, H, W, C) (a view when x is channels_last already)."""
    return x.permute(0, 2, 3, 1).contiguous()


def _flipped(window: Tensor, di0: int, dj0: int) -> tuple[Tensor, int, int]:
    """The window (in, out, kh, kw) and corner whose convolution of the output gradient is the
    input gradient: dx = conv(dy, flip(W)^T) at corner (-di0 - kh + 1, -dj0 - kw + 1)."""
    kh, kw = window.shape[-2:]
    return window.flip(2, 3).transpose(0, 1), -di0 - kh + 1, -dj0 - kw + 1


def _window_conv(x: Tensor, window: Tensor, di0: int, dj0: int) -> Tensor:
    """y[b, o, i, j] = sum_{c, a, e} window[o, c, a, e] x[b, c, i + di0 + a, j + dj0 + e] by the
    Triton kernel (channels-last inside; the result is a channels_last (B, out, H, W))."""
    kernels = dispatch.triton_kernels()
    packed = window.permute(2, 3, 1, 0).reshape(-1, window.shape[1], window.shape[0])
    out = kernels.masked_conv_window(
        _channels_last(x), packed.contiguous(), None, di0, dj0, window.shape[-1],
        acc_dtype=dispatch.accumulation_dtype(x.dtype), precision=dispatch.dot_precision(),
    )  # fmt: skip
    return out.permute(0, 3, 1, 2)


def _window_grad(x: Tensor, grad_out: Tensor, di0: int, dj0: int, kh: int, kw: int) -> Tensor:
    """grad_window (out, in, kh, kw) = sum_{b, i, j} grad_out[b, o, i, j] x[b, c, i + di0 + a,
    j + dj0 + e] by the Triton kernel."""
    kernels = dispatch.triton_kernels()
    packed = kernels.masked_conv_grad_weight(
        _channels_last(x), _channels_last(grad_out), di0, dj0, kh, kw,
        acc_dtype=dispatch.accumulation_dtype(x.dtype), precision=dispatch.dot_precision(),
    )  # fmt: skip
    return packed.reshape(kh, kw, x.shape[1], grad_out.shape[1]).permute(3, 2, 0, 1)


class _WindowConv(torch.autograd.Function):
    """``_window_conv`` with its derivatives written in ``_WindowConv`` and ``_WindowGrad``
    (so every order of derivative runs the kernels)."""

    @staticmethod
    def forward(ctx, x: Tensor, window: Tensor, di0: int, dj0: int) -> Tensor:
        ctx.save_for_backward(x, window)
        ctx.corner = di0, dj0
        return _window_conv(x, window, di0, dj0)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, window = ctx.saved_tensors
        di0, dj0 = ctx.corner
        grad_x = grad_window = None
        if ctx.needs_input_grad[0]:
            grad_x = _WindowConv.apply(grad_out, *_flipped(window, di0, dj0))
        if ctx.needs_input_grad[1]:
            grad_window = _WindowGrad.apply(x, grad_out, di0, dj0, *window.shape[-2:])
        return grad_x, grad_window, None, None


class _WindowGrad(torch.autograd.Function):
    """``_window_grad``, bilinear in (x, grad_out): its derivatives are window convolutions."""

    @staticmethod
    def forward(ctx, x: Tensor, grad_out: Tensor, di0: int, dj0: int, kh: int, kw: int) -> Tensor:
        ctx.save_for_backward(x, grad_out)
        ctx.corner = di0, dj0
        return _window_grad(x, grad_out, di0, dj0, kh, kw)

    @staticmethod
    def backward(ctx, grad_grad: Tensor):
        x, grad_out = ctx.saved_tensors
        di0, dj0 = ctx.corner
        grad_x = grad_g = None
        if ctx.needs_input_grad[0]:
            grad_x = _WindowConv.apply(grad_out, *_flipped(grad_grad, di0, dj0))
        if ctx.needs_input_grad[1]:
            grad_g = _WindowConv.apply(x, grad_grad, di0, dj0)
        return grad_x, grad_g, None, None, None, None


def to_blocks(images: Tensor, patch: int) -> Tensor:
    """Images (N, C, H, W) -> block grid (N, C p^2, H/p, W/p): cell (i, j) holds block (i, j)'s
    pixels, channel c p^2 + u p + v for pixel (u, v) of channel c (``F.pixel_unshuffle``)."""
    if images.shape[-1] % patch or images.shape[-2] % patch:
        raise ValueError(
            f"images of {images.shape[-2]} x {images.shape[-1]} pixels do not split into "
            f"{patch} x {patch} blocks; choose a patch that divides both sides"
        )
    return F.pixel_unshuffle(images, patch)


def from_blocks(grid: Tensor, patch: int) -> Tensor:
    """The inverse of ``to_blocks``: (N, C p^2, H/p, W/p) -> (N, C, H, W)."""
    return F.pixel_shuffle(grid, patch)
