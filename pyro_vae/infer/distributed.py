"""Data parallelism on ``torch.distributed``: this process's rank, its shard of a batch, and
collecting results from every rank. Outside a process group (one process) every helper is
the identity, so the same code runs in one process and in many.

The process group itself is the caller's: ``torchrun`` sets the environment and the
application calls ``torch.distributed.init_process_group`` (gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

from typing import Any, List, Tuple

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return world()[0] == 0


def shard(x: Tensor) -> Tensor:
    """This rank's contiguous share of ``x`` along its first dimension (sizes differ by at
    most one; a rank may get none of a batch smaller than the world)."""
    rank, size = world()
    return x if size == 1 else torch.tensor_split(x, size)[rank]


def gather(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` in one process)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: List[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def all_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over all ranks (``t`` itself in one process)."""
    if world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
