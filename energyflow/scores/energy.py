"""The energy score, the energy distance and the pairwise power sum they are made of
(docs/math.md, sections 2-4), on the fused kernels (``energyflow.ops``)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from energyflow._validation import check_beta, check_choice, check_points, check_weights
from energyflow.ops import dispatch, value_range
from energyflow.ops import energy_score as direct_scores
from energyflow.ops.pairwise import cross_power_sum, self_power_sum
from energyflow.scores._common import (
    batched,
    check_scored,
    check_two_sets,
    fp32_under_autocast,
    is_uniform,
    kernel_names,
    normalised,
    ones_like_rows,
    reduced,
    representable,
)

__all__ = ["energy_distance", "energy_score", "pairwise_power_sum"]


@fp32_under_autocast
def pairwise_power_sum(
    x: Tensor,
    y: Optional[Tensor] = None,
    *,
    beta: float = 1.0,
    x_weights: Optional[Tensor] = None,
    y_weights: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Weighted sum of ``||x_i - y_j||^beta`` over all pairs, without an N x M buffer.

    Cross sum (``y`` given):   S(X, Y; a, b) = sum_i sum_j a_i b_j ||x_i - y_j||^beta
    Self sum (``y is None``):  S_self(X; a)  = sum_{i != j} a_i a_j ||x_i - x_j||^beta

    Args:
        x: ``(N, D)`` or ``(B, N, D)`` floating points.
        y: ``(M, D)`` or ``(B, M, D)``, same dtype, device and batching as ``x``; ``None`` for the
            self sum.
        beta: exponent in (0, 2].
        x_weights: ``(N,)`` / ``(B, N)`` non-negative weights (default 1 each).
        y_weights: ``(M,)`` / ``(B, M)``; only with ``y``.
        backend: ``"auto"``, ``"triton"``, ``"cpp"`` or ``"reference"``.

    Returns:
        ``()`` for unbatched inputs, ``(B,)`` for batched ones.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> pairwise_power_sum(x, beta=1.0)  # both ordered pairs: 5 + 5
        tensor(10.)
        >>> pairwise_power_sum(x, torch.zeros(1, 2), x_weights=torch.tensor([1.0, 0.5]))
        tensor(2.5000)
    """
    if y is None:
        check_points("x", x)
        x_weights = check_weights("x_weights", x_weights, x, "x")
        if y_weights is not None:
            raise ValueError(
                "y_weights was given without y; pass the self-sum weights as x_weights"
            )
    else:
        x_weights, y_weights = check_two_sets(x, y, x_weights, y_weights)
    beta = check_beta(beta)
    backend = dispatch.resolve_pairwise(backend, x.device)
    unbatched = x.dim() == 2
    x3 = batched(x, 3)
    a = batched(x_weights, 2) if x_weights is not None else ones_like_rows(x3)
    if y is None:
        out = self_power_sum(x3, a, beta, backend, kernel_names("x", x_weights=x_weights))
    else:
        y3 = batched(y, 3)
        b = batched(y_weights, 2) if y_weights is not None else ones_like_rows(y3)
        names = kernel_names("x", "y", x_weights=x_weights, y_weights=y_weights)
        out = cross_power_sum(x3, y3, a, b, beta, backend, names)
    out = representable(out, x.dtype, "pairwise_power_sum")
    return out[0] if unbatched else out


@fp32_under_autocast
def energy_score(
    samples: Tensor,
    target: Tensor,
    *,
    beta: float = 1.0,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Energy score of ``m`` model samples per target (unbiased; docs/math.md, section 2).

        ES_b = (1/m) sum_j ||y_bj - x_b||^beta - 1/(2 m (m-1)) sum_{j != k} ||y_bj - y_bk||^beta

    Args:
        samples: ``(B, m, D)`` model samples per target (or ``(m, D)`` for one target), m >= 2.
        target: ``(B, D)`` observations (or ``(D,)``).
        beta: exponent in (0, 2); 2 is allowed but only matches means.
        weights: ``(B,)`` non-negative target weights.
        reduction: ``"mean"`` (weighted mean over targets), ``"sum"`` (weighted sum) or
            ``"none"`` (the ``(B,)`` scores, each multiplied by its weight if weights are given).

    Returns:
        ``()`` for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"`` (``()`` for one unbatched target).
        In the accumulation dtype: fp32 for fp16/bf16 samples (their two terms are combined
        there, not after rounding each to half precision), else the samples' dtype.

    For ``m <= 16`` samples per target the CPU backend takes every pair of a target at once
    (``energyflow.ops.energy_score``); larger ``m`` use the pairwise kernels.

    Example:
        >>> import torch
        >>> samples = torch.tensor([[[0.0], [2.0]]])  # one target, m = 2 samples
        >>> energy_score(samples, torch.tensor([[1.0]]))  # (1 + 1) / 2 - (2 + 2) / 4
        tensor(0.)
    """
    beta = check_beta(beta)
    samples3, target3, weights = check_scored("energy score", samples, target, weights, reduction)
    backend = dispatch.resolve_pairwise(backend, samples.device)

    m = samples3.shape[1]
    if direct_scores.has_direct_path(backend, m):
        scores = direct_scores.energy_scores(samples3, target3[:, 0, :], beta, backend)
    else:
        ones_target = ones_like_rows(target3)
        ones_samples = ones_like_rows(samples3)
        to_target = cross_power_sum(
            target3, samples3, ones_target, ones_samples, beta, backend, "target,samples,,"
        )
        spread = self_power_sum(samples3, ones_samples, beta, backend, "samples,")
        scores = to_target / m - spread / (2 * m * (m - 1))
    scores = reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return representable(scores, dispatch.accumulation_dtype(samples.dtype), "energy_score")


@fp32_under_autocast
def energy_distance(
    x: Tensor,
    y: Tensor,
    *,
    beta: float = 1.0,
    x_weights: Optional[Tensor] = None,
    y_weights: Optional[Tensor] = None,
    statistic: str = "v",
    include_xx: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Energy distance between two weighted samples (docs/math.md, section 3).

        V:  ED = 2 sum_ij a_i b_j |x_i - y_j|^b - sum_ij a_i a_j |x_i - x_j|^b
                 - sum_ij b_i b_j |y_i - y_j|^b
        U:  the same with the i = j terms dropped and the within-set sums over N(N-1), M(M-1)

    with weights normalised to sum to 1 (uniform by default). ``include_xx=False`` drops the X-X
    term, which has no gradient with respect to the model: a training loss may skip it.

    Args:
        x: ``(N, D)`` or ``(B, N, D)``, typically data.
        y: ``(M, D)`` or ``(B, M, D)``, typically model samples.
        statistic: ``"v"`` (any weights, ED >= 0) or ``"u"`` (unbiased, uniform weights only,
            N, M >= 2).

    Returns:
        ``()`` or ``(B,)``, in the accumulation dtype: fp32 for fp16/bf16 inputs (the three
        terms are combined there: in half precision they would cancel), else the inputs' dtype.

    Example:
        >>> import torch
        >>> x = torch.randn(500, 3)
        >>> abs(float(energy_distance(x, x))) < 1e-5  # identical samples: 0 (up to rounding)
        True
        >>> bool(energy_distance(x, x + 2.0) > 1.0)
        True
    """
    x_weights, y_weights = check_two_sets(x, y, x_weights, y_weights)
    beta = check_beta(beta)
    statistic = check_choice("statistic", statistic, ("v", "u"))
    backend = dispatch.resolve_pairwise(backend, x.device)
    unbatched = x.dim() == 2
    x3, y3 = batched(x, 3), batched(y, 3)
    n, m = x3.shape[1], y3.shape[1]

    if statistic == "u":
        for name, w in (("x_weights", x_weights), ("y_weights", y_weights)):
            if w is not None and value_range.values_readable(w) and not is_uniform(w):
                raise ValueError(
                    f"statistic='u' needs uniform weights, but {name} is not uniform; use "
                    "statistic='v'"
                )
        for name, count in (("x", n), ("y", m)):
            if count < 2:
                raise ValueError(f"statistic='u' needs at least 2 points in {name}, got {count}")
        ones_x, ones_y = ones_like_rows(x3), ones_like_rows(y3)
        out = 2 * cross_power_sum(x3, y3, ones_x, ones_y, beta, backend, "x,y,,") / (n * m)
        out = out - self_power_sum(y3, ones_y, beta, backend, "y,") / (m * (m - 1))
        if include_xx:
            out = out - self_power_sum(x3, ones_x, beta, backend, "x,") / (n * (n - 1))
    else:
        a = normalised(batched(x_weights, 2), x3)
        b = normalised(batched(y_weights, 2), y3)
        names = kernel_names("x", "y", x_weights=x_weights, y_weights=y_weights)
        out = 2 * cross_power_sum(x3, y3, a, b, beta, backend, names)
        out = out - self_power_sum(y3, b, beta, backend, kernel_names("y", y_weights=y_weights))
        if include_xx:
            out = out - self_power_sum(x3, a, beta, backend, kernel_names("x", x_weights=x_weights))
    out = representable(out, dispatch.accumulation_dtype(x.dtype), "energy_distance")
    return out[0] if unbatched else out
