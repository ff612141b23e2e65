"""A trained run read back for evaluation and pictures: the model, its config, its data."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from cvae_seg.config import Config, load_config, validate_config
from cvae_seg.data import build_dataset
from cvae_seg.hub import from_pretrained, read_pretrained_config
from cvae_seg.models.base import ConditionalGenerativeModel
from cvae_seg.training.build import build_model
from cvae_seg.training.checkpoint import load_checkpoint, load_model_state

log = logging.getLogger(__name__)

__all__ = ["dataset_for", "load_for_evaluation", "load_trained"]

# the data settings evaluation takes from the checkpoint (see `load_for_evaluation`)
_TRAINED_DATA_KEYS = ("size", "mean", "std", "mnist_observed", "binarize", "ignore_index")


def load_trained(
    checkpoint: str | os.PathLike, device: torch.device
) -> tuple[ConditionalGenerativeModel, Config, list[str]]:
    """Model (eval mode), config and class names of a training checkpoint (``*.pt``) or of a
    `save_pretrained` directory."""
    if Path(checkpoint).is_dir():
        source = f"{Path(checkpoint) / 'config.json'}"
        saved = read_pretrained_config(checkpoint)
        if not saved.get("training_config"):
            raise ValueError(
                f"{source} holds no training_config to evaluate with; save the model with "
                "save_pretrained(..., training_config=config.model_dump(mode='json')), as "
                "training does, or give a training checkpoint (last.pt)"
            )
        config = validate_config(saved["training_config"], f"{source}: training_config")
        classes = _class_names(saved.get("classes"), source)
        return from_pretrained(checkpoint, map_location=device), config, classes
    state = load_checkpoint(checkpoint, map_location=device)
    config = validate_config(state["config"], f"checkpoint {checkpoint}: config")
    classes = _class_names(state.get("classes"), f"checkpoint {checkpoint}")
    model = build_model(config, len(classes)).to(device)
    load_model_state(model, state["model"], f"checkpoint {checkpoint}")
    return model.eval(), config, classes


def _class_names(classes: Any, source: str) -> list[str]:
    """The saved class names, checked: evaluation sizes its metrics by them."""
    if not isinstance(classes, list) or len(classes) < 1:
        raise ValueError(f"{source} holds no list of class names (classes: {classes!r})")
    return [str(name) for name in classes]


def load_for_evaluation(
    checkpoint: str | os.PathLike,
    config_path: str | os.PathLike,
    overrides: list[str],
    device: torch.device,
) -> tuple[ConditionalGenerativeModel, Config, list[str]]:
    """A trained model with the user's config for data and evaluation.

    The data settings that define the task come from the trained model's config, whatever
    the user's config says, and a change is logged: the image size, the input normalisation
    (mean, std), ignore_index and MNIST's observed quadrants and targets (binarize, which
    changes the likelihood). Scores under other settings would look believable and be wrong.
    The model is the checkpoint's: model settings of the config that differ are named in a
    warning, so that an override such as model.objective=gsnn is never dropped unsaid. Another
    data set (scoring a model on data it was not trained on) is allowed and logged: data sets
    with the same class names (shapes, known_truth) would otherwise pass for each other
    unseen.
    """
    model, trained, classes = load_trained(checkpoint, device)
    config = load_config(config_path, overrides)
    if config.data.dataset != trained.data.dataset:  # allowed: scoring on other data
        log.warning("%s: data.dataset is %r, but checkpoint %s was trained on %r: the scores "
                    "are on another data set than the training's", config_path,
                    config.data.dataset, checkpoint, trained.data.dataset)  # fmt: skip
    for key in _TRAINED_DATA_KEYS:
        given, used = getattr(config.data, key), getattr(trained.data, key)
        if given != used:  # say so: the user asked for something else
            log.warning("data.%s=%s replaced by %s, the value %s was trained with",
                        key, given, used, checkpoint)  # fmt: skip
            setattr(config.data, key, used)
    unused = _differing_settings(config.model.model_dump(), trained.model.model_dump())
    if unused:  # the model is the checkpoint's: another model setting would change nothing
        log.warning("%s: the model comes from checkpoint %s, so these model settings are not "
                    "used: %s", config_path, checkpoint, ", ".join(unused))  # fmt: skip
    config.model = trained.model
    return model, config, classes


def _differing_settings(given: dict, used: dict) -> list[str]:
    """``model.key=given (trained: used)`` for every key whose values differ."""
    return [f"model.{key}={given[key]!r} (trained: {used.get(key)!r})"
            for key in sorted(given) if given[key] != used.get(key)]  # fmt: skip


def dataset_for(config: Config, split: str) -> torch.utils.data.Dataset:
    """A split without augmentation, for evaluation and pictures."""
    return build_dataset(config.data, split, train=False)
