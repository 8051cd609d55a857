"""Run under torchrun by tests/training/test_distributed.py (not a test module itself).

    python -m torch.distributed.run --standalone --nproc-per-node 2 distributed_worker.py MODE OUT

MODE "loss": the global energy losses against the single-process ones on the concatenated
batch (fp64), written as the largest differences. MODE "fit": 20 steps of fit on a fixed data
set (fp64), the loss curve written by rank 0 and a checkpoint at OUT.pt.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from energyflow import distributed, functional
from energyflow.models import SemiAutoregressiveGenerator
from energyflow.training.fit import fit

DATA_SEED, ROWS, SAMPLES = 7, (3, 17), (5, 4)


def losses(out: str) -> None:
    dist.init_process_group("gloo")
    me, ranks = distributed.rank(), distributed.world_size()
    worst = {}
    for n, m in zip(ROWS, SAMPLES):
        g = torch.Generator().manual_seed(DATA_SEED + n)
        x = torch.randn(n * ranks, 3, dtype=torch.float64, generator=g) * 2 + 5
        y = torch.randn(m * ranks, 3, dtype=torch.float64, generator=g).requires_grad_()
        mine_x, mine_y = slice(me * n, (me + 1) * n), slice(me * m, (me + 1) * m)
        for beta in (1.0, 1.5, 0.7):
            full = functional.energy_distance(x, y, beta=beta, include_xx=False)
            (full_grad,) = torch.autograd.grad(full, y)
            local = y.detach()[mine_y].clone().requires_grad_()
            value = distributed.global_energy_distance(x[mine_x], local, beta=beta)
            value.backward()
            # DDP averages gradients over ranks: this rank's samples' share is grad / ranks
            errors = [
                (value - full).abs().item(),
                (local.grad / ranks - full_grad[mine_y]).abs().max().item(),
            ]
            key = f"distance n={n} m={m} beta={beta}"
            worst[key] = max(errors)
        directions = torch.Generator().manual_seed(11)
        sliced_full = functional.sliced_energy_distance(
            x, y, num_projections=16, generator=directions
        )
        (sliced_grad,) = torch.autograd.grad(sliced_full, y)
        local = y.detach()[mine_y].clone().requires_grad_()
        directions.manual_seed(11)
        value = distributed.global_sliced_energy_distance(
            x[mine_x], local, num_projections=16, generator=directions
        )
        value.backward()
        worst[f"sliced n={n} m={m}"] = max(
            (value - sliced_full).abs().item(),
            (local.grad / ranks - sliced_grad[mine_y]).abs().max().item(),
        )
    if me == 0:
        with open(out, "w") as handle:
            json.dump(worst, handle)


def training(out: str) -> None:
    data = torch.randn(
        500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(DATA_SEED)
    )
    torch.manual_seed(0)
    model = SemiAutoregressiveGenerator(2, 2, hidden_features=(16,)).double()
    state = fit(
        model,
        data,
        steps=20,
        batch_size=64,
        lr=3e-3,
        seed=1,
        checkpoint=out + ".pt",
        progress=False,
    )
    if distributed.rank() == 0:
        with open(out, "w") as handle:
            json.dump([h["loss"] for h in state.history], handle)


if __name__ == "__main__":
    {"loss": losses, "fit": training}[sys.argv[1]](sys.argv[2])
    distributed.finish()
    # gloo still aborts now and then in interpreter teardown after the group is destroyed
    # ("terminate called without an active exception", rank 1, about 1 run in 20 on CI): the
    # results are written and the group is closed, so leave without the teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
