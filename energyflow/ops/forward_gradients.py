"""The backward pass of an op that computed its gradients in its forward pass, and its own
derivative (the op's double backward).

The fused kernels return a sum S (B,) together with dS/d input for each input that needs it
(one row pass gives both; the backward pass only scales them, as Liger-Kernel's fused losses
do). The first backward is then ``grad * computed``; written as an autograd function of the
op's *inputs*, it has a derivative of its own, given by the op's ``second_order`` rule:

    second_order(*inputs, *cotangents) -> L (B,), (dL/d input for each input)

with L = sum_k <cotangent_k, dS/d input_k> (``ops.second_order``). Its gradients are made of
differentiable torch ops, so every order of ``torch.autograd.grad(..., create_graph=True)``,
``torch.func.grad`` / ``jacrev`` of them, and ``vmap`` over them work.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

SecondOrder = Callable[..., tuple[Tensor, tuple[Optional[Tensor], ...]]]


def _per_batch(grad: Tensor, like: Tensor) -> Tensor:
    """grad (B,) shaped to broadcast against ``like`` (B, ...), in ``like``'s dtype."""
    return grad.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class ScaledGradients(torch.autograd.Function):
    """forward(second_order, grad, *inputs, *computed) -> grad * computed_k, each in its input's
    dtype (an empty ``computed_k``, not wanted, gives an empty output)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(second_order: SecondOrder, grad: Tensor, *tensors: Tensor):
        count = len(tensors) // 2
        inputs, computed = tensors[:count], tensors[count:]
        return tuple(
            c.new_empty(0) if c.numel() == 0 else (_per_batch(grad, c) * c).to(inp.dtype)
            for inp, c in zip(inputs, computed)
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        second_order, grad, *tensors = inputs
        ctx.second_order, ctx.count = second_order, len(tensors) // 2
        ctx.save_for_backward(grad, *tensors)
        ctx.set_materialize_grads(False)  # an unused gradient gets None, not a zero tensor

    @staticmethod
    def backward(ctx, *cotangents: Tensor):
        grad, *tensors = ctx.saved_tensors
        inputs, computed = tensors[: ctx.count], tensors[ctx.count :]
        # an output that was not computed (empty) has no cotangent
        cotangents = tuple(
            None if cot is None or c.numel() == 0 else cot for c, cot in zip(computed, cotangents)
        )
        if all(cot is None for cot in cotangents):
            return (None, None, *([None] * (2 * ctx.count)))
        total, derivatives = ctx.second_order(*inputs, *cotangents)
        grad_grad = total.to(grad.dtype)
        grad_inputs = tuple(
            None if d is None else (_per_batch(grad, d) * d).to(inp.dtype)
            for inp, d in zip(inputs, derivatives)
        )
        return (None, grad_grad, *grad_inputs, *([None] * ctx.count))


def gradients_of(
    second_order: SecondOrder,
    grad: Tensor,
    inputs: tuple[Tensor, ...],
    computed: tuple[Tensor, ...],
    needed: tuple[bool, ...],
) -> tuple[Optional[Tensor], ...]:
    """The gradients an op's backward returns for ``inputs``: ``grad`` (B,) times the gradients
    ``computed`` in its forward pass (None where autograd needs none)."""
    for inp, c, need in zip(inputs, computed, needed):
        if need and c.numel() == 0 and inp.numel() != 0:
            raise RuntimeError("a gradient was not computed in its op's forward pass")
    if torch.is_grad_enabled():  # create_graph: the gradients get a derivative of their own
        scaled = ScaledGradients.apply(second_order, grad, *inputs, *computed)
    else:
        scaled = ScaledGradients.forward(second_order, grad, *inputs, *computed)
    return tuple(g if need else None for g, need in zip(scaled, needed))


def save_forward_gradients(ctx, inputs: tuple, output: tuple, second_order: SecondOrder) -> None:
    """``setup_context`` of a ``FusedFunction``: its kernel's arguments are the tensors, then
    ``beta``, then options; its outputs the sum (B,) and one gradient per tensor (empty where
    not wanted), computed in the forward pass."""
    count = len(output) - 1
    ctx.rule = functools.partial(second_order, beta=inputs[count])
    ctx.arguments = len(inputs)
    ctx.save_for_backward(*inputs[:count], *output[1:])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no zero cotangents for the gradient outputs


class FusedFunction(torch.autograd.Function):
    """The autograd function of a fused kernel: a subclass defines ``forward`` (the kernel call)
    and ``setup_context`` (``save_forward_gradients`` with its op's second-order rule). The
    backward pass scales the saved gradients; the double backward applies the rule. (Module-level
    subclasses with explicit ``forward`` signatures: what torch.compile traces.)"""

    generate_vmap_rule = True

    @classmethod
    def call(cls, *args):
        """``apply`` with every argument positional. In plain eager mode it skips what
        ``Function.apply`` spends on binding default arguments through ``inspect`` (about 40 us
        a call, as much as a small kernel); traced or transformed calls take ``apply``."""
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return cls.apply(*args)
        args = torch._functorch.utils.unwrap_dead_wrappers(args)
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def backward(ctx, grad, *_unused):
        if grad is None:  # the sum was not used (its gradient outputs get no cotangent)
            return (None,) * ctx.arguments
        saved = ctx.saved_tensors
        count = len(saved) // 2
        needed = ctx.needs_input_grad[:count]
        grads = gradients_of(ctx.rule, grad, saved[:count], saved[count:], needed)
        return (*grads, *([None] * (ctx.arguments - count)))
