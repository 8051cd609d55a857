"""MaskPlan: prefixes, suffixes, level groups and the staircase tiles."""

from __future__ import annotations

import pytest
import torch

from energyflow.ops.mask_plan import MaskPlan, split_sizes
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
    # the tiles cover exactly the allowed entries, once each
    cover = torch.zeros(5, 5)
    for r0, r1, c0, c1 in plan.tiles:
        cover[r0:r1, c0:c1] += 1
    assert torch.equal(cover, plan.mask())


@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 16])
def test_staircase_tiles_cover_the_mask(k):
    plan = MaskPlan.build(levels([3] * k), levels([2] * k), strict=False)
    cover = torch.zeros(plan.out_features, plan.in_features)
    for r0, r1, c0, c1 in plan.tiles:
        cover[r0:r1, c0:c1] += 1
    assert torch.equal(cover, plan.mask())
    assert len(plan.tiles) <= 2 * k - 1


def test_split_sizes():
    assert split_sizes(7, 3, "blocks") == [3, 2, 2]
    assert split_sizes(7, [1, 6], "blocks") == [1, 6]
