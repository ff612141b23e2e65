"""The optimizer and its learning-rate schedule, and what a resume does with their settings.

A resumed run applies the config it is given: when ``train.lr``, ``train.betas`` or
``train.weight_decay`` differ from the checkpoint's, the restored optimizer takes the new
values (and says so in the log), so that the work dir's config.yaml tells the truth. Schedule
changes (``max_steps``, ``warmup_steps``, ``scheduler``) apply from the resumed step on.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from cvae_seg.config import TrainConfig
from cvae_seg.training.schedules import lr_factor

__all__ = ["apply_optimizer_settings", "build_optimizer"]

log = logging.getLogger(__name__)


def build_optimizer(
    model: torch.nn.Module, train: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with the config's rate, betas and weight decay, and its `lr_factor` schedule.

    torch's fused Adam where every parameter allows it (floating point, on the CPU or a CUDA
    device): one kernel for all parameters instead of a loop over them. A checkpoint written
    with the loop version resumes with it, since the optimizer's state carries the choice.
    """
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.Adam(
        params,
        lr=train.lr,
        betas=train.betas,
        weight_decay=train.weight_decay,
        fused=fused or None,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train))


def apply_optimizer_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    train: TrainConfig,
) -> dict[str, tuple[Any, Any]]:
    """Give a restored optimizer the settings of ``train``; returns what changed as
    {key: (restored, now)}.

    The rate of the next step is recomputed from the current schedule, which for an
    unchanged config is the value the checkpoint holds (bit for bit).
    """
    wanted = {"lr": train.lr, "betas": tuple(train.betas), "weight_decay": train.weight_decay}
    changed: dict[str, tuple[Any, Any]] = {}
    for group in optimizer.param_groups:
        restored = {
            "lr": group["initial_lr"],
            "betas": tuple(group["betas"]),
            "weight_decay": group["weight_decay"],
        }
        for key, value in wanted.items():
            if restored[key] != value:
                changed[key] = (restored[key], value)
        group["initial_lr"], group["betas"] = train.lr, wanted["betas"]
        group["weight_decay"] = train.weight_decay
    factor = lr_factor(train)(scheduler.last_epoch)
    scheduler.base_lrs = [train.lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["lr"] = train.lr * factor
    for key, (before, now) in changed.items():
        log.warning("resumed with train.%s=%s (the checkpoint trained with %s)", key, now, before)
    return changed
