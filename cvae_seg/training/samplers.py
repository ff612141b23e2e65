"""Which items a process loads, and in what order: training and evaluation samplers.

A run is a function of its config and seed alone: the data order and every augmentation are
derived from (seed, step), so a resumed run loads the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ShardSampler", "StepSampler", "make_loader"]


class StepSampler(Sampler[tuple[int, int]]):
    """Endless (index, augmentation seed) pairs, a function of (seed, step) alone.

    Epoch e is a permutation seeded by (seed, e), cut to whole global batches (drop-last);
    global batch k of the run is batch k mod (batches per epoch) of epoch k div (batches per
    epoch). Under torchrun, process r of N takes the r-th contiguous slice of each global
    batch, so the run sees the same batches, in the same order and with the same
    augmentations, for any N. Starting at ``start_step`` resumes exactly where a run stopped,
    whatever the number of workers.

    Why not torch's DistributedSampler: it cannot resume in the middle of an epoch and has
    no per-item augmentation seeds; this sampler keeps its contract (disjoint shards of one
    seeded permutation per epoch) and adds both.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size < batch_size:
            raise ValueError(
                f"the training set has {size} items, fewer than one batch of {batch_size}"
            )
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"a global batch of {batch_size} does not split into {world_size} equal "
                f"shards (rank {rank})"
            )
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = size // batch_size

    @property
    def local_batch_size(self) -> int:
        """Items per process and step (the DataLoader's batch size)."""
        return self.batch_size // self.world_size

    def position(self, step: int) -> dict[str, int]:
        """Epoch and batch within it of global step ``step`` (recorded in checkpoints)."""
        return {"epoch": step // self.batches_per_epoch, "batch": step % self.batches_per_epoch}

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, batch = self.position(self.start_step).values()
        local = self.local_batch_size
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)[
                : self.batches_per_epoch * self.batch_size
            ].tolist()
            seeds = np.random.SeedSequence([self.seed, epoch]).generate_state(self.size)
            for start in range(batch * self.batch_size, len(order), self.batch_size):
                shard = start + self.rank * local
                for index in order[shard : shard + local]:
                    yield index, int(seeds[index])
            epoch, batch = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class ShardSampler(Sampler[int]):
    """Process r of N evaluates items r, r + N, r + 2N, ...: every item exactly once over
    all processes (torch's DistributedSampler pads the last shard with repeats instead)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with pinned memory on GPUs and workers kept alive between epochs."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # its own generator: creating an iterator must not draw from the global RNG, which the
        # model's latent sampling uses (and checkpoints restore)
        generator=torch.Generator().manual_seed(seed),
    )
