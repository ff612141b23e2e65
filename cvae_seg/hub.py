"""Sharing trained models the smp way: ``save_pretrained(dir)`` and ``from_pretrained(dir)``.

A directory holds ``config.json`` (what rebuilds the backbone and the heads, and optionally the
training config and class names), ``model.safetensors`` (the weights) and ``README.md`` (a
model card). Nothing touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cvae_seg.reporting import atomic_write_text

__all__ = ["FORMAT_VERSION", "from_pretrained", "save_pretrained"]

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def _build(builder: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    if builder == "create_model":
        from cvae_seg.factory import create_model

        return create_model(**kwargs)
    if builder == "QuadrantCVAE":
        from cvae_seg.architectures.mnist import QuadrantCVAE

        return QuadrantCVAE(**kwargs)
    raise ValueError(f"unknown builder {builder!r}; expected 'create_model' or 'QuadrantCVAE'")


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    training_config: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, model.safetensors and a model card into ``directory``."""
    build = getattr(model, "build_spec", None)
    if build is None:
        raise ValueError(
            f"{type(model).__name__} was not built by cvae_seg.create_model (or QuadrantCVAE), "
            "so config.json could not rebuild it; build it with create_model, or save its "
            "state_dict yourself"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    from cvae_seg import __version__

    config = {
        "format_version": FORMAT_VERSION,
        "cvae_seg_version": __version__,
        **build,
        "classes": classes,
        "training_config": training_config,
        "metrics": metrics,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2))
    atomic_write_text(directory / CARD_NAME, _model_card(config))
    return directory


def from_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild a model saved by `save_pretrained` (eval mode). Errors name the file."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; expected a save_pretrained directory")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error})") from error
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {config.get('format_version')!r}; this cvae_seg "
            f"reads version {FORMAT_VERSION}"
        )
    if "builder" not in config or "kwargs" not in config:
        raise ValueError(f"{config_path} names no builder and kwargs to rebuild the model from")
    model = _build(config["builder"], config["kwargs"])
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as error:
        raise ValueError(f"{weights_path} could not be read ({error}); is it truncated?") from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{weights_path} does not fit the model that {config_path} describes: {error}"
        ) from error
    return model.to(map_location).eval()


def read_pretrained_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a saved model, as a dict."""
    return json.loads((Path(directory) / CONFIG_NAME).read_text())


def _model_card(config: dict[str, Any]) -> str:
    kwargs = config["kwargs"]
    training = config.get("training_config") or {}
    data = training.get("data", {})
    lines = [
        f"# cvae_seg model: {kwargs.get('arch', config['builder'])}, objective "
        f"{kwargs.get('objective')}",
        "",
        f"- built with: `{config['builder']}` ({json.dumps(kwargs)})",
        f"- data set: {data.get('dataset', 'unknown')} (size {data.get('size', 'n/a')})",
        f"- classes: {config.get('classes')}",
        f"- cvae_seg {config['cvae_seg_version']}, format {config['format_version']}",
        "",
        "Load with `cvae_seg.from_pretrained(<this folder>)`.",
    ]
    if config.get("metrics"):
        lines += ["", "## Validation metrics", ""]
        lines += [f"- {k}: {v}" for k, v in config["metrics"].items()]
    return "\n".join(lines) + "\n"
