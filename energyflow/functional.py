"""Energy scores and energy distances between point sets (docs/math.md, sections 2-5), and the
kernel and variogram scores that can be added to the energy score (section 2.1).

All ops take unbatched ``(N, D)`` or batched ``(B, N, D)`` point sets and return a scalar ``()``
or ``(B,)``. ``backend`` picks the kernel: ``"auto"`` (CUDA -> Triton, CPU -> C++ if built, else
the reference), ``"triton"``, ``"cpp"`` or ``"reference"`` (pure PyTorch, builds the N x M
matrix); the kernel and variogram scores are pure PyTorch (m samples per target, m small).
Gradients flow to every floating input: points and weights.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch
from torch import Tensor

from energyflow._validation import (
    check_beta,
    check_choice,
    check_points,
    check_positive,
    check_same_kind,
    check_weights,
)
from energyflow.ops import dispatch, value_range
from energyflow.ops import energy_score as direct_scores
from energyflow.ops.pairwise import cross_power_sum, self_power_sum

__all__ = [
    "energy_distance",
    "energy_score",
    "kernel_score",
    "pairwise_power_sum",
    "sliced_energy_distance",
    "variogram_score",
]


def _batched(t: Optional[Tensor], dims: int) -> Optional[Tensor]:
    """Add the leading batch dim to an unbatched tensor (None stays None)."""
    if t is None or t.dim() == dims:
        return t
    return t.unsqueeze(0)


def _ones_like_rows(points: Tensor) -> Tensor:
    return torch.ones(points.shape[:-1], dtype=points.dtype, device=points.device)


def fp32_under_autocast(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Declare an op's autocast behaviour: like ``torch.cdist``, it computes in float32 under
    ``torch.autocast`` (its fp16/bf16 tensor arguments are cast to fp32 and autocast is off
    inside, so no einsum of it runs in half precision); outside autocast it is unchanged."""

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        if not (
            torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
        ):
            return op(*args, **kwargs)

        def cast(value):
            half = isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16)
            return value.float() if half else value

        with torch.autocast(device_type, enabled=False):
            return op(*map(cast, args), **{key: cast(v) for key, v in kwargs.items()})

    return wrapper


def _names(*points: str, **weights: Optional[Tensor]) -> str:
    """The names a kernel's errors use: the points', then each user-given weights' (an empty
    name for weights the op made itself, which the kernel does not check again)."""
    return ",".join([*points, *(name if w is not None else "" for name, w in weights.items())])


def _representable(value: Tensor, dtype: torch.dtype, op: str) -> Tensor:
    """``value`` (float64) in ``dtype``; a ValueError where (readably) a finite value does not
    fit, rather than a silent inf: the fp32 result of fp32 points near 3e38 can exceed fp32."""
    out = value.to(dtype)
    if value_range.values_readable(value) and not bool(torch.isfinite(out).all()):
        largest = float(value.detach().abs().max())
        raise ValueError(
            f"{op}: the result ({largest:.3g}) exceeds the range of {dtype}; "
            "pass float64 inputs, or rescale the points (the result scales by s^beta)"
        )
    return out


def _check_two_sets(
    x: Tensor, y: Tensor, x_weights: Optional[Tensor], y_weights: Optional[Tensor]
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Validate two point sets and their weights; returns the weights in the points' dtype."""
    check_points("x", x)
    check_points("y", y)
    check_same_kind("x", x, "y", y)
    return (
        check_weights("x_weights", x_weights, x, "x"),
        check_weights("y_weights", y_weights, y, "y"),
    )


def _check_scored(
    score: str, samples: Tensor, target: Tensor, weights: Optional[Tensor], reduction: str
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Validate the arguments of a scoring rule of ``m`` samples per target; returns samples
    (B, m, D), target (B, 1, D) and the weights (B,) in float64."""
    check_points("samples", samples)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != samples.dim() - 1:
        raise ValueError(
            f"target must have shape {tuple(samples.shape[:-2]) + (samples.shape[-1],)} for "
            f"samples of shape {tuple(samples.shape)} (samples (B, m, D) with target (B, D), "
            f"or (m, D) with (D,)), got {tuple(target.shape)}"
        )
    if samples.shape[-2] < 2:
        raise ValueError(
            f"the {score} needs m >= 2 samples per target, got m={samples.shape[-2]} "
            f"(samples shape {tuple(samples.shape)})"
        )
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    samples3 = _batched(samples, 3)
    target3 = target.reshape(-1, 1, target.shape[-1]) if target.dim() >= 1 else target
    check_points("target", target3)
    check_same_kind("target", target3, "samples", samples3)
    if weights is not None:
        weights = check_weights("weights", weights, target, "target").reshape(-1)
        weights = weights.to(torch.float64)
    return samples3, target3, weights


def _reduced(scores: Tensor, weights: Optional[Tensor], reduction: str, unbatched: bool) -> Tensor:
    """Per-target scores (B,) weighted and reduced as the scoring rules' ``reduction`` says."""
    if weights is not None:
        scores = scores * weights
    if reduction == "none":
        return scores[0] if unbatched else scores
    total = scores.sum()
    if reduction == "sum":
        return total
    return total / (weights.sum() if weights is not None else scores.shape[0])


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
        x_weights, y_weights = _check_two_sets(x, y, x_weights, y_weights)
    beta = check_beta(beta)
    backend = dispatch.resolve_pairwise(backend, x.device)
    unbatched = x.dim() == 2
    x3 = _batched(x, 3)
    a = _batched(x_weights, 2) if x_weights is not None else _ones_like_rows(x3)
    if y is None:
        out = self_power_sum(x3, a, beta, backend, _names("x", x_weights=x_weights))
    else:
        y3 = _batched(y, 3)
        b = _batched(y_weights, 2) if y_weights is not None else _ones_like_rows(y3)
        names = _names("x", "y", x_weights=x_weights, y_weights=y_weights)
        out = cross_power_sum(x3, y3, a, b, beta, backend, names)
    out = _representable(out, x.dtype, "pairwise_power_sum")
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
        >>> samples = torch.tensor([[[0.0], [2.0]]])  # one target, m = 2 samples
        >>> energy_score(samples, torch.tensor([[1.0]]))  # (1 + 1) / 2 - (2 + 2) / 4
        tensor(0.)
    """
    beta = check_beta(beta)
    samples3, target3, weights = _check_scored("energy score", samples, target, weights, reduction)
    backend = dispatch.resolve_pairwise(backend, samples.device)

    m = samples3.shape[1]
    if direct_scores.has_direct_path(backend, m):
        scores = direct_scores.energy_scores(samples3, target3[:, 0, :], beta, backend)
    else:
        ones_target = _ones_like_rows(target3)
        ones_samples = _ones_like_rows(samples3)
        to_target = cross_power_sum(
            target3, samples3, ones_target, ones_samples, beta, backend, "target,samples,,"
        )
        spread = self_power_sum(samples3, ones_samples, beta, backend, "samples,")
        scores = to_target / m - spread / (2 * m * (m - 1))
    scores = _reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return _representable(scores, dispatch.accumulation_dtype(samples.dtype), "energy_score")


def _mean_over_distinct_pairs(values: Tensor) -> Tensor:
    """(B, m, m, ...) -> (B, ...): the mean over the m (m - 1) ordered pairs j != k."""
    m = values.shape[1]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=values.device)
    shape = (1, m, m) + (1,) * (values.dim() - 3)
    return (values * off_diagonal.reshape(shape)).sum((1, 2)) / (m * (m - 1))


@fp32_under_autocast
def kernel_score(
    samples: Tensor,
    target: Tensor,
    *,
    bandwidth: float = 1.0,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Gaussian kernel score of ``m`` model samples per target (unbiased; docs/math.md, 2.1).

        KS_b = 1/(2 m (m-1)) sum_{j != k} k(y_bj, y_bk) - (1/m) sum_j k(y_bj, x_b) + 1/2,
        k(u, v) = exp(-||u - v||^2 / (2 h^2))

    Its expectation is half the squared MMD between the model and the target's distribution (the
    constant 1/2 makes a point mass at x_b score 0), so it is strictly proper. With a bandwidth
    ``h`` below the scale of the data it weighs local structure that the energy score (a
    long-range kernel) sees weakly: a term to add to the energy score, not a replacement (its
    gradient vanishes for samples farther than a few h from everything).

    Args:
        samples: ``(B, m, D)`` model samples per target (or ``(m, D)`` for one target), m >= 2.
        target: ``(B, D)`` observations (or ``(D,)``).
        bandwidth: h > 0, in the units of the points.
        weights, reduction: as in ``energy_score``.

    Returns:
        ``()`` for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``. Pure PyTorch: memory
        O(B m^2 D).

    Example:
        >>> samples = torch.tensor([[[0.0], [0.0]]])  # a point mass on the target: score 0
        >>> kernel_score(samples, torch.tensor([[0.0]]))
        tensor(0.)
    """
    h = check_positive("bandwidth", bandwidth)
    samples3, target3, weights = _check_scored("kernel score", samples, target, weights, reduction)
    samples3, target3 = _in_working_dtype(samples3, target3, names="samples,target")
    gamma = -0.5 / (h * h)
    within = (samples3[:, :, None] - samples3[:, None]).square().sum(-1)  # (B, m, m)
    to_target = (samples3 - target3).square().sum(-1)  # (B, m)
    scores = (
        0.5 * _mean_over_distinct_pairs(torch.exp(gamma * within))
        - torch.exp(gamma * to_target).mean(1)
        + 0.5
    )
    scores = _reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return _representable(scores, dispatch.accumulation_dtype(samples.dtype), "kernel_score")


@fp32_under_autocast
def variogram_score(
    samples: Tensor,
    target: Tensor,
    *,
    p: float = 0.5,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Variogram score of order ``p`` of ``m`` model samples per target (Scheuerer and Hamill,
    2015; unbiased estimator; docs/math.md, 2.1).

        VS_b = sum_{d < e} (|x_bd - x_be|^p - E |Y_d - Y_e|^p)^2

    over the feature pairs (d, e), with the square of the expectation estimated without bias from
    the m samples' values v_j = |y_bjd - y_bje|^p: a^2 - 2 a mean_j v_j + sum_{j != k} v_j v_k /
    (m (m - 1)). Proper but not strictly (it sees only the distribution of pairwise differences,
    so not the location): it targets the dependence between features, where the energy score is
    weak, and belongs beside the energy score, not in its place.

    Args:
        samples: ``(B, m, D)`` (or ``(m, D)``), m >= 2 and D >= 2.
        target: ``(B, D)`` (or ``(D,)``).
        p: order in (0, 2]; 0.5 is the usual choice.
        weights, reduction: as in ``energy_score``.

    Returns:
        ``()`` for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``. Pure PyTorch: memory
        O(B m D^2).

    Example:
        >>> samples = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # differences 1, as the target's
        >>> variogram_score(samples, torch.tensor([5.0, 6.0]))
        tensor(0.)
    """
    p = check_positive("p", p, high=2.0)
    samples3, target3, weights = _check_scored(
        "variogram score", samples, target, weights, reduction
    )
    features = samples3.shape[-1]
    if features < 2:
        raise ValueError(
            f"the variogram score compares pairs of features and needs D >= 2, got D={features}"
        )
    first, second = torch.triu_indices(features, features, offset=1, device=samples3.device)
    samples3, target3 = _in_working_dtype(samples3, target3, names="samples,target")
    tiny = torch.finfo(samples3.dtype).tiny  # |0|^p has an infinite slope for p < 1

    def variogram(points: Tensor) -> Tensor:
        return (points[..., first] - points[..., second]).abs().clamp_min(tiny) ** p

    observed, modelled = variogram(target3)[:, 0], variogram(samples3)  # (B, P), (B, m, P)
    cross_moment = _mean_over_distinct_pairs(modelled[:, :, None] * modelled[:, None])
    scores = (observed.square() - 2 * observed * modelled.mean(1) + cross_moment).sum(-1)
    scores = _reduced(scores, weights, reduction, unbatched=samples.dim() == 2)
    return _representable(scores, dispatch.accumulation_dtype(samples.dtype), "variogram_score")


def _in_working_dtype(*points: Tensor, names: str) -> tuple[Tensor, ...]:
    """The points of a pure-PyTorch op in the dtype it computes in: the accumulation dtype, or
    float64 where their values lie outside its safe range (``ops.value_range``: squares of fp32
    coordinates beyond 2^63 overflow). Values are checked (NaN, inf) where they can be read:
    under torch.compile or vmap these ops skip the checks, the fused ops do not."""
    work = dispatch.accumulation_dtype(points[0].dtype)
    if value_range.values_readable(*points):
        if value_range.range_exponent(points, (), names, work) != 0:
            work = torch.float64
    return tuple(p.to(work) for p in points)


def _normalised(weights: Optional[Tensor], points: Tensor) -> Tensor:
    """Weights summing to 1, in the accumulation dtype (1/300 in bf16 is 0.2% off, and the
    energy distance's terms would not share that error)."""
    acc = dispatch.accumulation_dtype(points.dtype)
    if weights is None:
        return points.new_full(points.shape[:-1], 1.0 / points.shape[-2], dtype=acc)
    weights = weights.to(acc)
    return weights / weights.sum(-1, keepdim=True)


def _is_uniform(weights: Tensor) -> bool:
    return bool((weights == weights[..., :1]).all())


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
        >>> x = torch.randn(500, 3)
        >>> abs(float(energy_distance(x, x))) < 1e-5  # identical samples: 0 (up to rounding)
        True
        >>> bool(energy_distance(x, x + 2.0) > 1.0)
        True
    """
    x_weights, y_weights = _check_two_sets(x, y, x_weights, y_weights)
    beta = check_beta(beta)
    statistic = check_choice("statistic", statistic, ("v", "u"))
    backend = dispatch.resolve_pairwise(backend, x.device)
    unbatched = x.dim() == 2
    x3, y3 = _batched(x, 3), _batched(y, 3)
    n, m = x3.shape[1], y3.shape[1]

    if statistic == "u":
        for name, w in (("x_weights", x_weights), ("y_weights", y_weights)):
            if w is not None and value_range.values_readable(w) and not _is_uniform(w):
                raise ValueError(
                    f"statistic='u' needs uniform weights, but {name} is not uniform; use "
                    "statistic='v'"
                )
        for name, count in (("x", n), ("y", m)):
            if count < 2:
                raise ValueError(f"statistic='u' needs at least 2 points in {name}, got {count}")
        ones_x, ones_y = _ones_like_rows(x3), _ones_like_rows(y3)
        out = 2 * cross_power_sum(x3, y3, ones_x, ones_y, beta, backend, "x,y,,") / (n * m)
        out = out - self_power_sum(y3, ones_y, beta, backend, "y,") / (m * (m - 1))
        if include_xx:
            out = out - self_power_sum(x3, ones_x, beta, backend, "x,") / (n * (n - 1))
    else:
        a = _normalised(_batched(x_weights, 2), x3)
        b = _normalised(_batched(y_weights, 2), y3)
        names = _names("x", "y", x_weights=x_weights, y_weights=y_weights)
        out = 2 * cross_power_sum(x3, y3, a, b, beta, backend, names)
        out = out - self_power_sum(y3, b, beta, backend, _names("y", y_weights=y_weights))
        if include_xx:
            out = out - self_power_sum(x3, a, beta, backend, _names("x", x_weights=x_weights))
    out = _representable(out, dispatch.accumulation_dtype(x.dtype), "energy_distance")
    return out[0] if unbatched else out


def sphere_mean_abs_constant(dim: int) -> float:
    """c_D = sqrt(pi) Gamma((D+1)/2) / Gamma(D/2), so that E|w.v| = ||v|| / c_D on the sphere.

    Example:
        >>> round(sphere_mean_abs_constant(1), 6), round(sphere_mean_abs_constant(2), 6)  # 1, pi/2
        (1.0, 1.570796)
    """
    return math.exp(0.5 * math.log(math.pi) + math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def _sliced_energy_terms(projected: Tensor, weights: Tensor, n_x: int) -> Tensor:
    """Per-direction 1-D energy distance 2 P(X u Y) - 4 P(X) - 4 P(Y) from one sort.

    ``projected`` (B, L, N+M) holds X's projections first; ``weights`` (B, 1, N+M) the normalised
    weights. With P(S) = sum_{i<j in S} w_i w_j |z_i - z_j| = sum_k w_k z_k (2 C_k - w_k - T) over
    the sorted values (C the inclusive cumulative weight, T the total; docs/math.md, section 5), the
    sums over X and over Y alone reuse the sort of the union with the other set's weights zeroed.
    """
    z, order = torch.sort(projected, dim=-1)
    w = torch.gather(weights.expand_as(projected), -1, order).double()
    from_x = order < n_x
    coefficient = torch.zeros_like(w)
    for part, factor in ((w, 2.0), (w * from_x, -4.0), (w * ~from_x, -4.0)):
        cumulative = torch.cumsum(part, dim=-1)
        coefficient = coefficient + factor * part * (2 * cumulative - part - cumulative[..., -1:])
    return (z.double() * coefficient).sum(-1)


@fp32_under_autocast
def sliced_energy_distance(
    x: Tensor,
    y: Tensor,
    *,
    num_projections: int = 128,
    x_weights: Optional[Tensor] = None,
    y_weights: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """Unbiased sliced estimate of the V-statistic energy distance with beta = 1 (section 5).

    For L directions w_l uniform on the sphere, each 1-D energy distance comes from one sort of
    the projections of X u Y, O((N+M) log(N+M)) (the sums within X and Y reuse that sort):

        ED ~= c_D / L sum_l [2 P_l(X u Y) - 4 P_l(X) - 4 P_l(Y)],
        c_D = sqrt(pi) G((D+1)/2) / G(D/2)

    with P the weighted within-set pair sum (weights normalised to 1). Unbiased for every L; the
    variance falls as 1/L. Differentiable through the sort. Directions are processed in chunks of
    at most ``max_chunk_elements`` projected values to bound memory.

    Args:
        x: ``(N, D)`` or ``(B, N, D)``; y: ``(M, D)`` or ``(B, M, D)``.
        num_projections: L >= 1.
        generator: the ``torch.Generator`` for the directions (on the points' device).

    Returns:
        ``()`` or ``(B,)``, in the points' dtype.

    Example:
        >>> x, y = torch.randn(2, 2000, 4, dtype=torch.float64)
        >>> exact = energy_distance(x, y + 1)
        >>> sliced = sliced_energy_distance(x, y + 1, num_projections=512)
        >>> bool(abs(sliced - exact) < 0.1 * exact)
        True
    """
    x_weights, y_weights = _check_two_sets(x, y, x_weights, y_weights)
    if (
        isinstance(num_projections, bool)
        or not isinstance(num_projections, int)
        or num_projections < 1
    ):
        raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
    unbatched = x.dim() == 2
    x3, y3 = _in_working_dtype(_batched(x, 3), _batched(y, 3), names="x,y")
    a = _normalised(_batched(x_weights, 2), x3)[:, None, :]  # (B, 1, N)
    b = _normalised(_batched(y_weights, 2), y3)[:, None, :]
    both = torch.cat([x3, y3], dim=1)
    ab = torch.cat([a, b], dim=-1)
    n, dim = x3.shape[1], x3.shape[-1]

    # drawn in float64 whatever the points' dtype: one generator state gives one estimate
    directions = torch.randn(
        num_projections, dim, generator=generator, device=x.device, dtype=torch.float64
    )
    directions = (directions / directions.norm(dim=-1, keepdim=True)).to(x3.dtype)
    per_chunk = max(1, max_chunk_elements // (both.shape[0] * both.shape[1]))
    total = torch.zeros(x3.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, num_projections, per_chunk):
        chunk = directions[start : start + per_chunk]
        proj = torch.einsum("bnd,ld->bln", both, chunk)  # (B, L_chunk, N + M)
        total = total + _sliced_energy_terms(proj, ab, n).sum(-1)
    out = (sphere_mean_abs_constant(dim) / num_projections * total).to(x.dtype)
    return out[0] if unbatched else out
