"""MaskPlan: prefixes, suffixes and level groups; the strip cuts of the blocked backend."""

from __future__ import annotations

import pytest
import torch

from energyflow.ops.mask_plan import MaskPlan, split_sizes
from energyflow.ops.masked_strips import cut
from helpers import levels


def test_mask_plan_prefix_and_suffix():
    plan = MaskPlan.build([0, 0, 1, 2, 2], [0, 1, 1, 2, 3], strict=True)
    assert plan.prefix.tolist() == [0, 2, 2, 3, 5]
    assert plan.first_out.tolist() == [1, 1, 3, 4, 4]
    want = torch.tensor(
        [[i < o for i in [0, 0, 1, 2, 2]] for o in [0, 1, 1, 2, 3]], dtype=torch.float32
    )
    assert torch.equal(plan.mask(), want)
    loose = MaskPlan.build([0, 0, 1, 2, 2], [0, 1, 1, 2, 3], strict=False)
    assert loose.prefix.tolist() == [2, 3, 3, 5, 5]
    assert plan.out_groups == ((0, 1, 0), (1, 3, 2), (3, 4, 3), (4, 5, 5))
    assert plan.level_group(2) == (3, 4, 3) and plan.level_rows(1) == (1, 3)
    assert plan.level_rows(7) == (5, 5)  # no output at level 7: an empty range


@pytest.mark.parametrize(
    "in_sizes, out_sizes, strict",
    [
        ([3] * 8, [2] * 8, False),
        ([1, 4, 0, 2, 5], [3, 1, 2, 2, 1], True),  # a level without inputs, uneven groups
        ([5], [7], True),  # one group reading nothing
        ([2, 3, 4], [6, 6, 6], True),  # the last inputs are read by no output
    ],
)
@pytest.mark.parametrize("count", [1, 2, 3, 5, 100])
def test_every_strip_cut_covers_each_allowed_entry_once(in_sizes, out_sizes, strict, count):
    plan = MaskPlan.build(levels(in_sizes), levels(out_sizes), strict=strict)
    allowed = plan.mask(torch.bool)
    for kind in ("forward", "grad_weight"):  # rows in order, each strip as wide as its rows read
        strips = cut(kind, list(plan.out_groups), count)
        assert len(strips) <= count
        cover = torch.zeros(plan.out_features, plan.in_features, dtype=torch.int32)
        for start, end, prefix in strips:
            cover[start:end, :prefix] += 1
        rows = [row for start, end, _ in strips for row in range(start, end)]
        assert rows == list(range(plan.out_features)) or plan.prefix.max() == 0
        assert (cover[allowed] == 1).all()
    strips = cut("grad_input", list(plan.out_groups), count)  # columns, from their first reader
    cover = torch.zeros(plan.out_features, plan.in_features, dtype=torch.int32)
    for col_start, col_end, first_row in strips:
        cover[first_row:, col_start:col_end] += 1
    assert (cover[allowed] == 1).all()
    assert (cover.sum(0) > 0).tolist() == allowed.any(0).tolist()  # unread columns: no strip


def test_split_sizes():
    assert split_sizes(7, 3, "blocks") == [3, 2, 2]
    assert split_sizes(7, [1, 6], "blocks") == [1, 6]
