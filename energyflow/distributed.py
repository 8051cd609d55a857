"""Data-parallel energy losses on torch.distributed (docs/math.md, section 3; README "Scaling out").

The energy distance couples every pair of points in a batch, so a loss computed on one rank's
rows alone is only a small-batch estimate. The **global** losses here equal the single-process
loss on the concatenation of all ranks' rows, in value and gradient:

    ED(X, Y) = 2/(N M) sum_{i,j} |x_i - y_j|^b - 1/M^2 sum_{j,j'} |y_j - y_j'|^b    (no X-X term)

Rank r holds data rows X_r and model samples Y_r; the samples are gathered (``all_gather``, with
autograd) and rank r computes its share of both sums, the pairs whose first point it holds:

    L_r = 2/(N M) sum_{i in X_r, j} |x_i - y_j|^b - 1/M^2 sum_{j in Y_r, j'} |y_j - y_j'|^b

so sum_r L_r = ED. Each rank returns the full value (the shares are all-reduced, detached) with
the gradient of R L_r, which DDP's gradient averaging turns into the gradient of ED. A step sends
each rank's samples (M/R x D floats) and receives the others': O(batch x D), never O(batch^2).

Outside an initialised process group (or with one process) every function here is the plain
single-process op.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from energyflow import functional

__all__ = [
    "all_gather",
    "finish",
    "global_energy_distance",
    "global_sliced_energy_distance",
    "broadcast_from_rank_zero",
    "data_parallel",
    "decided_by_rank_zero",
    "init_from_environment",
    "is_distributed",
    "local",
    "mean_over_ranks",
    "rank",
    "world_size",
]


_local_only = False


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process (and outside
    ``local()``)."""
    if _local_only:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Within the block, the global losses are this process's own (no communication): for work
    that one rank does alone, such as validation."""
    global _local_only
    before, _local_only = _local_only, True
    try:
        yield
    finally:
        _local_only = before


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_from_environment(device: torch.device) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment), with
    ``nccl`` for CUDA devices and ``gloo`` otherwise. Returns whether this is a multi-process
    run; does nothing when the group exists already or when run as a single process."""
    if dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    # a process that exits with the group alive can abort in gloo's teardown ("terminate called
    # without an active exception"): the group this function made is closed at exit at the latest
    atexit.register(finish, synchronise=False)
    return is_distributed()


def mean_over_ranks(value: Tensor) -> Tensor:
    """``value`` averaged over the processes (a copy; itself outside a process group)."""
    value = value.detach().clone()
    if is_distributed():
        dist.all_reduce(value)
        value /= world_size()
    return value


def decided_by_rank_zero(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (clocks and validations differ between processes, and all
    must stop, or keep weights, together)."""
    if not is_distributed():
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.broadcast(value, 0)
    return bool(value.item())


def broadcast_from_rank_zero(value: Tensor) -> Tensor:
    """Rank 0's ``value`` on every rank (in place; itself outside a process group)."""
    if is_distributed():
        dist.broadcast(value, 0)
    return value


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel inside a process group, else itself."""
    if not is_distributed():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def finish(synchronise: bool = True) -> None:
    """Close the process group, if one is open (a no-op otherwise, so safe to call twice).

    With ``synchronise`` every rank first waits at a barrier, so that no rank tears down its
    connections while another is still using them; pass ``False`` on an error path, where the
    other ranks may be inside a different collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if synchronise and dist.get_world_size() > 1:
        with contextlib.suppress(RuntimeError):  # a rank that already died: nothing to wait for
            dist.barrier()
    dist.destroy_process_group()


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums the gathered gradient over ranks (an all-reduce: gloo has
    no reduce-scatter) and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` (n, ...) concatenated in rank order, (R n, ...); gradients flow
    back to the rank that holds each row (summed over the ranks that used it). Equal row counts
    on every rank. Outside a process group: ``tensor`` itself."""
    if not is_distributed():
        return tensor
    return _AllGather.apply(tensor.contiguous())


def _global_value(share: Tensor) -> Tensor:
    """``share`` summed over ranks as the value, with the gradient of R * share (see the module
    docstring: DDP averages the R gradients)."""
    total = share.detach().clone()
    dist.all_reduce(total)
    scaled = share * world_size()
    return scaled + (total - scaled).detach()


def global_energy_distance(
    x: Tensor, y: Tensor, *, beta: float = 1.0, backend: str = "auto"
) -> Tensor:
    """The energy distance without the X-X term (the training loss) between all ranks' data
    rows ``x`` (n, D) and model samples ``y`` (m, D), equal on every rank to
    ``energy_distance(cat(x), cat(y), beta=beta, include_xx=False)`` in value, and in gradient
    after DDP's averaging. Every rank must hold the same n and m.

    Example (one process: the plain op):
        >>> x, y = torch.randn(2, 50, 3, dtype=torch.float64)
        >>> full = functional.energy_distance(x, y, include_xx=False)
        >>> bool(torch.allclose(global_energy_distance(x, y), full))
        True
    """
    if not is_distributed():
        return functional.energy_distance(x, y, beta=beta, include_xx=False, backend=backend)
    everyone = all_gather(y)
    n, m = x.shape[0] * world_size(), everyone.shape[0]
    cross = functional.pairwise_power_sum(x, everyone, beta=beta, backend=backend)
    within = functional.pairwise_power_sum(y, everyone, beta=beta, backend=backend)
    return _global_value(2.0 * cross / (n * m) - within / (m * m))


def global_sliced_energy_distance(
    x: Tensor,
    y: Tensor,
    *,
    num_projections: int = 64,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The sliced energy distance (beta = 1) between all ranks' ``x`` and ``y``: both sets are
    gathered and every rank computes the full estimate with the same directions (``generator``
    must be seeded alike on every rank). Its gradient reaches each rank's samples R times (once
    per rank), which DDP's averaging divides back out."""
    return functional.sliced_energy_distance(
        all_gather(x.detach()),
        all_gather(y),
        num_projections=num_projections,
        generator=generator,
    )
