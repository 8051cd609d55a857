"""How the blocked masked-linear backend cuts its weight into strips, chosen by timing.

A layer's outputs come in groups of equal prefix (``MaskPlan.out_groups``): group g holds rows
[start_g, end_g) that read inputs [0, prefix_g). A *strip* is a run of consecutive groups done
by one GEMM over the run's widest block, with Wm the masked weight (so the entries a strip
covers beyond a row's own prefix add zeros):

    forward       z[:, rows]      = x[:, :p] Wm[rows, :p]^T      rows: the run's, p: its last prefix
    weight grad   dW[rows, :p]    = dz[:, rows]^T x[:, :p]       (then masked)
    input grad    dx[:, cols]     = dz[:, r:] Wm[r:, cols]        cols: the inputs the run's groups
                                                                  add, r: the run's first row

One strip is the dense masked product (what nflows / zuko compute); one strip per group does the
least arithmetic, (K+1)/(2K) of dense, but in K small GEMMs. A cut's GEMMs run one after
another, each on all threads, or *grouped*: side by side, one thread each, in the C++ extension
(``grouped_addmm_``; on the CPU with more than one thread), where few threads share many small
products better than each product shares the threads. Which cut and which of the two is fastest
depends on the shapes, the batch, the machine and its threads, so ``cuts`` times the candidates
of each pass the first time it meets a layer shape, batch bucket, dtype and thread count, and
keeps the fastest for the process (``ENERGYFLOW_MASKED_STRIPS=G`` fixes G strips run one after
another instead, for every pass).
Work too small to time well (``TIMED_MIN_WORK``) takes the dense cut: there a single GEMM wins.
Timed alone, a pass runs with its operands in cache; whether the strips also win inside a network,
with the layer's other costs, the ``auto`` backend measures on the whole layer
(``ops.masked_linear``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from energyflow.ops import dispatch

Strip = tuple[int, int, int]  # forward / weight grad: (row start, row end, prefix);
#                               input grad: (col start, col end, first row reading them)
KINDS = ("forward", "grad_input", "grad_weight")
CANDIDATE_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TIMED_MIN_WORK = 1 << 22  # batch x in x out multiply-adds below which the dense cut is taken
TIMED_MAX_ROWS = 1024  # candidates are timed on at most this many batch rows
TIMING_REPEATS = 5

_CHOSEN: dict[tuple, "LayerCuts"] = {}


def out_groups(groups: list[int]) -> list[tuple[int, int, int]]:
    """The flat ``[start, end, prefix, ...]`` list the custom ops carry, as triples."""
    return [(groups[i], groups[i + 1], groups[i + 2]) for i in range(0, len(groups), 3)]


def _runs(weights: list[int], count: int) -> list[tuple[int, int]]:
    """Cut items with these ``weights`` into at most ``count`` runs of near-equal total weight
    (each item goes to the run its midpoint falls in): (first, last + 1) item indices, every
    run with positive weight (items of weight 0 join the run before them, or after at the start).
    """
    total, labels, done = sum(weights), [], 0
    for weight in weights:
        labels.append(min(count - 1, int((done + weight / 2) * count / total)) if total else 0)
        done += weight
    runs: list[list[int]] = []
    for index, (label, weight) in enumerate(zip(labels, weights)):
        if runs and (label == labels[runs[-1][0]] or weight == 0 or runs[-1][2] == 0):
            runs[-1][1] = index + 1
            runs[-1][2] += weight
        else:
            runs.append([index, index + 1, weight])
    return [(first, last) for first, last, weight in runs if weight > 0]


def cut(kind: str, groups: list[tuple[int, int, int]], count: int) -> tuple[Strip, ...]:
    """The ``count``-strip cut of one pass (near-equal rows, or near-equal new columns for the
    input gradient).

    Example:
        >>> groups = [(0, 2, 1), (2, 4, 3), (4, 6, 4)]  # rows 0-1 read 1 input, 2-3 read 3, ...
        >>> cut("forward", groups, 2), cut("forward", groups, 1)
        (((0, 2, 1), (2, 6, 4)), ((0, 6, 4),))
        >>> cut("grad_input", groups, 3)  # inputs 0, 1-2 and 3, first read by rows 0, 2 and 4
        ((0, 1, 0), (1, 3, 2), (3, 4, 4))
    """
    if kind == "grad_input":
        starts = [0] + [prefix for _, _, prefix in groups[:-1]]
        added = [max(prefix - start, 0) for (_, _, prefix), start in zip(groups, starts)]
        strips = []
        for first, last in _runs(added, count):
            reader = next(g for g in range(first, last) if added[g] > 0)
            strips.append((starts[reader], groups[last - 1][2], groups[reader][0]))
        return tuple(strips)
    rows = [end - start for start, end, _ in groups]
    return tuple(
        (groups[first][0], groups[last - 1][1], groups[last - 1][2])
        for first, last in _runs(rows, count)
    )


@dataclass(frozen=True)
class LayerCuts:
    """The cut of each pass (``Strip`` tuples) for one layer shape and batch bucket, and whether
    each pass runs its strips grouped (``grouped_addmm_``) or one after another."""

    forward: tuple[Strip, ...]
    grad_input: tuple[Strip, ...]
    grad_weight: tuple[Strip, ...]
    grouped: tuple[bool, bool, bool] = (False, False, False)

    def dense(self, with_gradients: bool) -> bool:
        """Whether the forward pass (and both gradients if ``with_gradients``) is one strip."""
        passes = (self.forward, self.grad_input, self.grad_weight)[: 3 if with_gradients else 1]
        return all(len(strips) <= 1 for strips in passes)


def batch_bucket(rows: int) -> int:
    """The power of two at or above ``rows``: batches that share a bucket share their cuts."""
    return 1 << max(rows - 1, 1).bit_length()


def fixed_count() -> Optional[int]:
    """The strip count ``ENERGYFLOW_MASKED_STRIPS`` fixes for every pass, or None."""
    value = os.environ.get("ENERGYFLOW_MASKED_STRIPS")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ENERGYFLOW_MASKED_STRIPS must be a positive integer, got {value!r}")
    return int(value)


def cuts(groups: list[int], in_features: int, rows: int, like: Tensor) -> LayerCuts:
    """The cuts for a layer with these flat ``groups`` and ``in_features`` at ``rows`` batch
    rows of ``like``'s dtype and device: ``ENERGYFLOW_MASKED_STRIPS`` if set, dense for small
    work, else the fastest candidates, timed once per shape, batch bucket, dtype, device and
    thread count."""
    fixed = fixed_count()
    if fixed is not None:
        return LayerCuts(*(cut(kind, out_groups(groups), fixed) for kind in KINDS))
    bucket = batch_bucket(rows)
    key = (tuple(groups), in_features, bucket, like.dtype, like.device.type,
           torch.get_num_threads())  # fmt: skip
    chosen = _CHOSEN.get(key)
    if chosen is None:
        triples = out_groups(groups)
        if len(triples) == 1 or bucket * in_features * triples[-1][1] < TIMED_MIN_WORK:
            chosen = LayerCuts(*(cut(kind, triples, 1) for kind in KINDS))
        else:
            chosen = _fastest(triples, in_features, min(bucket, TIMED_MAX_ROWS), like)
        _CHOSEN[key] = chosen
    return chosen


def fastest_in_turn(runs: list[Callable[[], object]], like: Tensor) -> list[float]:
    """The fastest of ``TIMING_REPEATS`` timings (seconds) of each of ``runs`` on ``like``'s
    device, timed in turn (A, B, A, B, ...) after a warm-up round. The work is the same every
    time, so the fastest run is its cost and the slower ones carry what else the machine did:
    a median still let one busy moment of a shared machine pick the slower candidate."""
    sync = torch.cuda.synchronize if like.device.type == "cuda" else (lambda: None)
    samples: list[list[float]] = [[] for _ in runs]
    for round_ in range(TIMING_REPEATS + 1):
        for run, kept in zip(runs, samples):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if round_:
                kept.append(time.perf_counter() - start)
    return [min(kept) for kept in samples]


def grouping_available(like: Tensor) -> bool:
    """Whether strips can run grouped for tensors like ``like``: CPU tensors, the C++ extension
    built, more than one thread to share."""
    return like.device.type == "cpu" and torch.get_num_threads() > 1 and dispatch.cpp_available()


def _fastest(
    groups: list[tuple[int, int, int]], in_features: int, rows: int, like: Tensor
) -> LayerCuts:
    out_features = groups[-1][1]
    options = dict(dtype=like.dtype, device=like.device)
    x = torch.full((rows, in_features), 0.5, **options)
    dz = torch.full((rows, out_features), 0.5, **options)
    weight = torch.full((out_features, in_features), 0.5, **options)

    def runner(kind: str, strips: tuple[Strip, ...], grouped: bool) -> Callable[[], Tensor]:
        if kind == "forward":
            return lambda: forward(x, weight, None, strips, grouped)
        if kind == "grad_input":
            return lambda: grad_input(dz, weight, strips, grouped)
        return lambda: grad_weight(dz, x, strips, grouped)

    modes = (False, True) if grouping_available(like) else (False,)
    chosen, grouped = [], []
    for kind in KINDS:
        counts = [count for count in CANDIDATE_COUNTS if count <= len(groups)]
        options = list(dict.fromkeys(cut(kind, groups, count) for count in counts))
        candidates = [(c, mode) for mode in modes for c in options if len(c) > 1 or not mode]
        times = fastest_in_turn([runner(kind, *candidate) for candidate in candidates], like)
        best, mode = candidates[min(range(len(candidates)), key=times.__getitem__)]
        chosen.append(best)
        grouped.append(mode)
    return LayerCuts(*chosen, grouped=tuple(grouped))


# ---- the three passes over a cut (the masked weight is given: entries past a prefix are 0) ----
def _addmm_each(
    out: list[Tensor], lhs: list[Tensor], rhs: list[Tensor], beta: float, grouped: bool
) -> None:
    """out[i] = beta out[i] + lhs[i] @ rhs[i] for every i: side by side in the C++ extension
    (``grouped``), else one after another."""
    if grouped:
        dispatch.cpp_module().grouped_addmm_(out, lhs, rhs, beta)
        return
    for target, a, b in zip(out, lhs, rhs):
        target.addmm_(a, b, beta=beta)


def forward(
    x: Tensor,
    masked_weight: Tensor,
    bias: Optional[Tensor],
    cut: tuple[Strip, ...],
    grouped: bool = False,
) -> Tensor:
    """x (M, in) -> x Wm^T + b (M, out), one GEMM per strip."""
    rows = (x.shape[0], masked_weight.shape[0])
    if bias is None:
        z = x.new_zeros(rows)
    else:
        z = torch.empty(rows, dtype=x.dtype, device=x.device).copy_(bias.expand(rows))
    strips = [(start, end, prefix) for start, end, prefix in cut if prefix]
    _addmm_each(
        [z[:, start:end] for start, end, _ in strips],
        [x[:, :prefix] for _, _, prefix in strips],
        [masked_weight[start:end, :prefix].t() for start, end, prefix in strips],
        1.0,
        grouped,
    )
    return z


def grad_input(
    dz: Tensor, masked_weight: Tensor, cut: tuple[Strip, ...], grouped: bool = False
) -> Tensor:
    """dz (M, out) -> dz Wm (M, in), one GEMM per strip of inputs; unread inputs get 0."""
    dx = dz.new_empty(dz.shape[0], masked_weight.shape[1])
    _addmm_each(
        [dx[:, col_start:col_end] for col_start, col_end, _ in cut],
        [dz[:, first_row:] for _, _, first_row in cut],
        [masked_weight[first_row:, col_start:col_end] for col_start, col_end, first_row in cut],
        0.0,
        grouped,
    )
    covered = cut[-1][1] if cut else 0
    dx[:, covered:].zero_()
    return dx


def grad_weight(dz: Tensor, x: Tensor, cut: tuple[Strip, ...], grouped: bool = False) -> Tensor:
    """dz (M, out), x (M, in) -> dz^T x over the strips (out, in); 0 outside them (the caller
    masks the entries inside a strip past each row's prefix)."""
    dw = x.new_zeros(dz.shape[1], x.shape[1])
    strips = [(start, end, prefix) for start, end, prefix in cut if prefix]
    _addmm_each(
        [dw[start:end, :prefix] for start, end, prefix in strips],
        [dz[:, start:end].t() for start, end, _ in strips],
        [x[:, :prefix] for _, _, prefix in strips],
        0.0,
        grouped,
    )
    return dw
