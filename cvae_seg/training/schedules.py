"""Schedules over training steps: the learning-rate factor and the KL warm-up.

Both are pure functions of the step (0-based: the step about to be taken), so a resumed run
follows the schedule of the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cvae_seg.config import TrainConfig

__all__ = ["kl_warmup_factor", "lr_factor"]


def lr_factor(train: TrainConfig) -> Callable[[int], float]:
    """The factor on ``train.lr`` at each step (for `torch.optim.lr_scheduler.LambdaLR`).

    Linear warm-up over ``train.warmup_steps`` (from 1/warmup to 1), then constant or a
    cosine decay to 0 at ``train.max_steps``, as ``train.scheduler`` says.
    """

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.scheduler == "cosine":
            progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def kl_warmup_factor(step: int, warmup_steps: int) -> float:
    """The KL's share at ``step``: linear from 1/warmup to 1 over ``warmup_steps``, then 1.

    Annealing the KL from (nearly) zero keeps latent channels from collapsing onto the prior
    before the decoder has learnt to use them.
    """
    if warmup_steps == 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)
