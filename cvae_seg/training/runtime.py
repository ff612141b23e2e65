"""Where and how a run computes: device, mixed precision, and the torchrun processes."""

from __future__ import annotations

import numpy as np
import torch

from cvae_seg import distributed
from cvae_seg.config import Config

__all__ = [
    "autocast_dtype",
    "process_batch_size",
    "rank_rng_seed",
    "select_device",
    "wrap_for_processes",
]


def select_device(name: str | None = None) -> torch.device:
    """The named device, else the GPU when there is one, else the CPU.

    A name this machine cannot run on is refused here, in words, instead of later with a
    driver message.
    """
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device {name!r}: not a device name; expected cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s)")
    return device


def autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """None without ``train.amp``; else bf16 where the hardware has it (no loss scaling
    needed), fp16 on older GPUs."""
    if not config.train.amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def process_batch_size(config: Config, world: int) -> tuple[int, int]:
    """(global, per-process) batch size for ``world`` processes, as data.batch_scope says."""
    batch = config.data.batch_size
    if config.data.batch_scope == "per_process":
        return batch * world, batch
    if batch % world:
        raise ValueError(
            f"data.batch_size={batch} is the global batch (data.batch_scope=global) and must "
            f"divide evenly among the {world} processes"
        )
    return batch, batch // world


def rank_rng_seed(seed: int, step: int, rank: int) -> int:
    """Latent-noise seed of process ``rank`` > 0 (rank 0 keeps the single-process stream)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def wrap_for_processes(
    model: torch.nn.Module, config: Config, device: torch.device
) -> torch.nn.Module:
    """DistributedDataParallel under torchrun (optionally with SyncBatchNorm), else the model."""
    if distributed.world_size() == 1:
        return model
    if config.train.sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                "train.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm has no CPU kernel"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # every parameter receives a gradient in every objective (tested), so DDP need not search
    # for unused ones
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
