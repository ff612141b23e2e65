"""The accumulator every per-image metric shares: a mean over all images fed to it."""

from __future__ import annotations

import torch

import cvae_seg.metrics._checks as checks
from cvae_seg import distributed
from cvae_seg.checks import integer_at_least

__all__ = ["ImageMean", "MapDistanceMean"]


class ImageMean:
    """Mean of a per-image score over every image fed to `update`.

    A NaN score means the image had nothing to score (every pixel ignored, say): it is left
    out of the mean and counted in ``skipped``. `compute` is NaN when no image counted.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0
        self.skipped = 0

    def add(self, per_image: torch.Tensor) -> None:
        """Count the per-image scores (any shape; one score per element; NaN skipped)."""
        scores = per_image.detach().double().flatten()
        defined = ~torch.isnan(scores)
        self.total += float(scores[defined].sum())
        self.count += int(defined.sum())
        self.skipped += int((~defined).sum())

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.total / self.count if self.count else float("nan"))

    def sync(self) -> None:
        """Pool the images of every torchrun process (a no-op in a single process)."""
        summed = distributed.all_reduce_sum(
            torch.tensor([self.total, self.count, self.skipped], dtype=torch.float64)
        )
        self.total, self.count, self.skipped = float(summed[0]), int(summed[1]), int(summed[2])


class MapDistanceMean(ImageMean):
    """An `ImageMean` of a score built on the distance between label maps (GED, diversity,
    HM-IoU): it keeps the distance's options, passed to the score function on each update.

    ``num_classes`` and ``empty_distance`` are checked here, so a bad option fails when the
    accumulator is built rather than at its first update.
    """

    def __init__(
        self,
        num_classes: int,
        background: int | None = 0,
        empty_distance: float = 0.0,
        ignore_index: int | None = None,
    ) -> None:
        checks.empty_distance(empty_distance)
        self.options: dict = dict(
            num_classes=integer_at_least("num_classes", num_classes),
            background=background,
            empty_distance=empty_distance,
            ignore_index=ignore_index,
        )
        super().__init__()
