"""Block masks from unit levels (docs/math.md, section 6).

A masked layer's input and output units carry non-decreasing integer levels; input ``i`` may feed
output ``o`` iff ``level_in[i] < level_out[o]`` (strict) or ``<=`` (not strict). Because levels
are sorted, every output's allowed inputs are a *prefix* of the inputs and every input's allowed
outputs a *suffix* of the outputs, so the weight matrix is block lower-triangular:

    prefix[o]    = number of inputs output o may read              (out_features,)
    first_out[i] = first output that may read input i               (in_features,)

Kernels iterate only over those prefixes/suffixes; ``MaskPlan`` holds them once per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

Levels = Union[Sequence[int], Tensor]


def as_levels(name: str, levels: Levels) -> Tensor:
    """A 1-D int64 tensor of non-decreasing levels, or a ValueError naming ``name``."""
    tensor = torch.as_tensor(levels)
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of integer levels, got shape "
            f"{tuple(tensor.shape)}"
        )
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.int64)
    if bool((tensor[1:] < tensor[:-1]).any()):
        position = int(torch.nonzero(tensor[1:] < tensor[:-1])[0]) + 1
        raise ValueError(
            f"{name} must be non-decreasing (sort the units by level); level "
            f"{int(tensor[position])} at "
            f"index {position} follows {int(tensor[position - 1])}"
        )
    return tensor


def split_sizes(total: int, parts: Union[int, Sequence[int]], name: str) -> list[int]:
    """``parts`` as a list of sizes summing to ``total``: an int K gives a near-equal split."""
    if isinstance(parts, int) and not isinstance(parts, bool):
        if parts < 1:
            raise ValueError(f"{name} must be >= 1, got {parts}")
        if parts > total and total > 0:
            raise ValueError(f"{name}={parts} exceeds the {total} units to split")
        base, extra = divmod(total, parts)
        return [base + (1 if k < extra else 0) for k in range(parts)]
    sizes = [int(s) for s in parts]
    if any(s < 0 for s in sizes) or sum(sizes) != total:
        raise ValueError(f"{name} {sizes} must be non-negative and sum to {total}")
    return sizes


@dataclass(frozen=True)
class MaskPlan:
    """The connectivity of one block-masked layer, precomputed from its levels.

    Attributes:
        in_levels, out_levels: (in_features,), (out_features,) int64 levels.
        strict: whether connections need ``in < out`` (else ``in <= out``).
        prefix: (out_features,) int32, inputs readable by each output.
        first_out: (in_features,) int32, first output that reads each input (out_features if none).
        out_groups: ``(start, end, prefix)`` per run of equal output levels.
        flat_groups: ``out_groups`` flattened to one list (3 ints per group), as the custom ops
            take it (``ops.masked_strips`` cuts the groups into strips).
        groups_by_level: each output level's group, for cached stepping.

    Example:
        >>> plan = MaskPlan.build([0, 0, 1, 2], [1, 2, 3], strict=True)
        >>> plan.prefix.tolist(), plan.first_out.tolist()
        ([2, 3, 4], [0, 0, 1, 2])
        >>> plan.mask().tolist()
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """

    in_levels: Tensor
    out_levels: Tensor
    strict: bool
    prefix: Tensor
    first_out: Tensor
    out_groups: tuple[tuple[int, int, int], ...]
    flat_groups: list[int]
    groups_by_level: dict[int, tuple[int, int, int]]

    @staticmethod
    def build(in_levels: Levels, out_levels: Levels, strict: bool) -> "MaskPlan":
        ins = as_levels("in_levels", in_levels)
        outs = as_levels("out_levels", out_levels)
        prefix = torch.searchsorted(ins, outs, right=not strict)
        first_out = torch.searchsorted(prefix, torch.arange(len(ins)), right=True)
        out_groups = tuple((s, e, int(prefix[s])) for s, e in _runs(outs))
        return MaskPlan(
            in_levels=ins,
            out_levels=outs,
            strict=strict,
            prefix=prefix.to(torch.int32),
            first_out=first_out.to(torch.int32),
            out_groups=out_groups,
            flat_groups=[bound for group in out_groups for bound in group],
            groups_by_level={int(outs[group[0]]): group for group in out_groups},
        )

    @property
    def in_features(self) -> int:
        return len(self.in_levels)

    @property
    def out_features(self) -> int:
        return len(self.out_levels)

    def mask(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The dense (out_features, in_features) 0/1 mask."""
        return (torch.arange(self.in_features)[None, :] < self.prefix[:, None].long()).to(dtype)

    def density(self) -> float:
        """Fraction of the weight the mask allows: the fraction of dense work a kernel does."""
        return float(self.prefix.double().sum()) / (self.in_features * self.out_features)

    def level_rows(self, level: int) -> tuple[int, int]:
        """(start, end) of the outputs at ``level`` (empty range if none)."""
        return self.level_group(level)[:2]

    def level_group(self, level: int) -> tuple[int, int, int]:
        """(start, end, prefix) of the outputs at ``level``: the rows and the inputs they read
        (an empty range where no output has that level)."""
        group = self.groups_by_level.get(level)
        if group is None:
            start = int(torch.searchsorted(self.out_levels, torch.tensor(level)))
            return start, start, 0
        return group


def _runs(levels: Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values in a sorted 1-D tensor."""
    _, counts = torch.unique_consecutive(levels, return_counts=True)
    ends = torch.cumsum(counts, 0).tolist()
    return list(zip([0] + ends[:-1], ends))
