"""torch.distributed for the suite: one process group, entered by ``--nproc`` or by ``torchrun``.

Two ways in, one path: ``--nproc N`` spawns N processes that meet through a file (``runner.py``);
``torchrun`` starts the processes itself, on one machine or several, and they meet through its
``env://`` rendezvous (:func:`from_torchrun`). Either way each process enters :func:`process_group`
and runs the same code, the trainer (``engine.py``), which reads the rank and world size from the
group (:func:`world`); rank 0 alone writes results.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# Environment variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def torchrun_world_size() -> int | None:
    """The world size when this process was started by torchrun (its variables are set), else None."""
    if all(name in os.environ for name in TORCHRUN_VARIABLES):
        return int(os.environ["WORLD_SIZE"])
    return None


def local_device(device: str, local_rank: int) -> str:
    """The device of a process: ``cuda:LOCAL_RANK`` for ``cuda``, the device itself otherwise."""
    return f"cuda:{local_rank}" if device == "cuda" else device


@contextlib.contextmanager
def process_group(
    device: str, init_method: str, rank: int | None = None, world_size: int | None = None
) -> Iterator[None]:
    """The default process group (nccl on CUDA, gloo on CPU) for the duration of the block.

    On the way out every rank meets at a barrier before the group is torn down: no rank destroys
    the group while another still uses it.
    """
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    kwargs: dict[str, Any] = {} if rank is None else {"rank": rank, "world_size": world_size}
    dist.init_process_group(backend, init_method=init_method, **kwargs)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def from_torchrun(device: str) -> Iterator[str]:
    """Join torchrun's rendezvous (``env://``); yields this process's device."""
    local = local_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    with process_group(local, "env://"):
        yield local


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object); the value itself outside a group."""
    if world()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum of ``value`` over the ranks, in place; unchanged outside a group."""
    if world()[1] > 1:
        dist.all_reduce(value)
    return value


def gather_weights(weights: Tensor) -> Tensor:
    """Each rank filled the weights of its own samples (NaN elsewhere): merge them on every rank."""
    if world()[1] == 1:
        return weights
    seen = ~torch.isnan(weights)
    merged = torch.stack([weights.nan_to_num(0.0), seen.to(weights.dtype)])
    dist.all_reduce(merged)
    return torch.where(merged[1] > 0, merged[0] / merged[1].clamp_min(1.0), math.nan)
