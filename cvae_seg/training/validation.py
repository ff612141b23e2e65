"""The periodic validation of a training run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from cvae_seg import distributed
from cvae_seg.config import Config
from cvae_seg.evaluation import evaluate, evaluate_likelihood
from cvae_seg.models.base import ConditionalGenerativeModel
from cvae_seg.training.runtime import autocast_dtype

__all__ = ["summary", "validate"]


def validate(
    model: ConditionalGenerativeModel,
    config: Config,
    loader: Iterable,
    classes: tuple[str, ...],
    device: torch.device,
    progress: bool = False,
) -> dict[str, float]:
    """Segmentation metrics (with the likelihood when ``eval.likelihood_during_training``),
    or the likelihood alone for MNIST.

    Under torchrun the loader gives this process's shard and the result is pooled over all
    processes (every process gets the same numbers).
    """
    pooled = distributed.world_size() > 1
    progress = progress and distributed.is_main_process()
    if config.data.dataset == "mnist":
        return evaluate_likelihood(
            model,
            loader,
            device,
            num_samples=config.eval.num_samples,
            chunk_size=config.eval.chunk_size,
            progress="val" if progress else None,
            across_processes=pooled,
        )
    return evaluate(
        model,
        loader,
        classes,
        device,
        prediction=config.eval.prediction,
        likelihood=config.eval.likelihood_during_training,
        num_samples=config.eval.num_samples,
        chunk_size=config.eval.chunk_size,
        autocast_dtype=autocast_dtype(config, device),
        progress="val" if progress else None,
        across_processes=pooled,
    )


def summary(values: dict[str, Any]) -> str:
    """The headline metrics of an evaluation, for one log line."""
    keys = ("pixel_accuracy", "class_accuracy", "mean_iou", "foreground_iou", "nll")
    return ", ".join(f"{k} {values[k]:.2f}" for k in keys if k in values)
