"""torch.distributed for training and evaluation: process-group set-up from torchrun, and
the few collectives they need (all no-ops in a single process).

We run on PyTorch's own distribution (torchrun, DistributedDataParallel, gloo or NCCL); this
module only keeps the training loop free of ``if distributed`` branches.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_cat",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "init_from_env",
    "is_main_process",
    "launched_by_torchrun",
    "mean_over_processes",
    "rank",
    "world_size",
]


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or any launcher setting WORLD_SIZE > 1) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_initialized() -> bool:
    """True once this process has joined a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 writes checkpoints, logs and pictures; the others only compute."""
    return rank() == 0


def init_from_env(device: str | None = None, timeout_s: float = 1800) -> torch.device:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    NCCL when the processes use GPUs (one per process, chosen by LOCAL_RANK), gloo on CPUs
    (``device="cpu"``, or no GPU). Returns this process's device; calling it again in an
    initialised process only returns the device.
    """
    if not launched_by_torchrun():
        raise RuntimeError("init_from_env needs torchrun's environment (WORLD_SIZE > 1)")
    wants_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        torch.cuda.set_device(local_rank)
        local_device = torch.device("cuda", local_rank)
    else:
        local_device = torch.device("cpu")
    if not is_initialized():
        dist.init_process_group(
            backend="nccl" if wants_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=local_device if wants_cuda else None,
        )
    return local_device


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun script)."""
    if is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo takes CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (a new tensor on tensor's device)."""
    if not is_initialized():
        return tensor.clone()
    work = tensor.detach().to(_collective_device()).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """The mean of each process's ``values`` (with equal shards per process: the global mean)."""
    if world_size() == 1:
        return values
    keys = sorted(values)
    summed = all_reduce_sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / world_size() for k, v in zip(keys, summed, strict=True)}


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order."""
    if not is_initialized():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The concatenation of every process's ``tensor`` (dim 0; lengths may differ)."""
    if not is_initialized():
        return tensor
    return torch.cat([part.to(tensor.device) for part in all_gather_objects(tensor.cpu())])


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics drift apart, since
    each process updates them from its own share of the batch)."""
    if not is_initialized():
        return
    for buffer in module.buffers():
        work = buffer.data.to(_collective_device())
        dist.broadcast(work, src=0)
        buffer.data.copy_(work.to(buffer.device))


def barrier() -> None:
    """Wait until every process gets here."""
    if is_initialized():
        dist.barrier()
