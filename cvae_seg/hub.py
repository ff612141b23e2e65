"""Sharing trained models the smp way: ``save_pretrained(dir)`` and ``from_pretrained(dir)``.

A directory holds ``config.json`` (what rebuilds the backbone and the heads, and optionally the
training config and class names), ``model.safetensors`` (the weights) and ``README.md`` (a
model card). Models are rebuilt through `cvae_seg.registry`; nothing touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from cvae_seg.io import atomic_write_bytes, atomic_write_text
from cvae_seg.registry import create_model
from cvae_seg.version import __version__

__all__ = ["FORMAT_VERSION", "from_pretrained", "load_model_state", "save_pretrained"]

FORMAT_VERSION = 2  # 2: "arch" + "kwargs" for the registry; 1 (cvae_seg 0.x): "builder"
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    training_config: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, model.safetensors and a model card into ``directory``.

    ``model.config`` says how to rebuild the model through the registry; a model wrapped by
    hand, ``CVAE(smp.FPN(...))``, has one as long as its backbone keeps its constructor
    arguments, as smp models do.
    """
    build = dict(model.config)
    arch = build.pop("arch")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"save_pretrained: {directory} is a file; expected a folder (made when missing)"
        )
    config = {
        "format_version": FORMAT_VERSION,
        "cvae_seg_version": __version__,
        "arch": arch,
        "kwargs": build,
        "classes": classes,
        "training_config": training_config,
        "metrics": metrics,
    }
    _check_classes(classes, getattr(model, "num_classes", None))
    try:
        json.dumps(build)
    except TypeError as error:
        raise TypeError(
            f"save_pretrained: the arguments model {arch!r} was built with must be plain JSON "
            f"values to be saved (int(n) rather than a numpy integer, lists, str): {error}"
        ) from None
    try:  # before anything is written: a value JSON cannot hold leaves no half-saved folder
        config_text = json.dumps(config, indent=2)
    except TypeError as error:
        raise TypeError(
            f"save_pretrained: training_config, classes and metrics must hold plain JSON "
            f"values (dicts, lists, str, numbers; e.g. config.model_dump(), float(tensor)): "
            f"{error}"
        ) from None
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    atomic_write_text(directory / CONFIG_NAME, config_text)
    atomic_write_text(directory / CARD_NAME, _model_card(config))
    return directory


def _check_classes(classes: list[str] | None, num_classes: int | None) -> None:
    if classes is None or num_classes is None or num_classes == 1:  # 1: MNIST's pixel targets
        return
    if len(classes) != num_classes:
        raise ValueError(
            f"classes has {len(classes)} names ({classes}), but the model predicts "
            f"{num_classes} classes"
        )


def from_pretrained(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild a model saved by `save_pretrained` (eval mode). Errors name the file."""
    directory = Path(directory)
    if directory.is_file():
        hint = (
            f"give its folder, {directory.parent}"
            if directory.name in (CONFIG_NAME, WEIGHTS_NAME)
            else "a training checkpoint (.pt) loads with cvae_seg.training.load_trained(path, "
            "device)"
        )
        raise ValueError(
            f"{directory} is a file; from_pretrained takes a save_pretrained folder (a training "
            f"run's pretrained/): {hint}"
        )
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; expected a save_pretrained directory")
    device = _device(map_location)
    config = read_pretrained_config(directory)
    if config.get("format_version") not in (1, FORMAT_VERSION):
        raise ValueError(
            f"{config_path} has format_version {config.get('format_version')!r}; this cvae_seg "
            f"reads versions 1 and {FORMAT_VERSION}"
        )
    arch, kwargs = _architecture(config, config_path)
    try:
        model = create_model(arch, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_path}: model {arch!r} could not be built ({error})") from error
    try:  # an edited config.json whose names no longer match the model's outputs
        _check_classes(config.get("classes"), getattr(model, "num_classes", None))
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from None
    try:
        state = load_file(str(weights_path), device=str(device))
    except Exception as error:
        raise ValueError(f"{weights_path} could not be read ({error}); is it truncated?") from error
    load_model_state(model, state, weights_path)
    return model.to(device).eval()


def _device(map_location: str | torch.device) -> torch.device:
    """``map_location`` as a device this machine has (not a read error of the weights)."""
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"map_location {map_location!r} is not a device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"map_location {map_location!r}: CUDA is not available here")
    return device


# cvae_seg 0.x saved the MNIST model under QuadrantCVAE's own argument names
_V1_MNIST_NAMES = {
    "hidden": "mlp_hidden",
    "latent_features": "latent_channels",
    "dropout": "mlp_dropout",
}


def _architecture(config: dict[str, Any], config_path: Path) -> tuple[str, dict[str, Any]]:
    """(registered name, keyword arguments) that rebuild the saved model."""
    kwargs = config.get("kwargs")
    if config["format_version"] == 1 and isinstance(kwargs, dict):
        if config.get("builder") == "QuadrantCVAE":
            return "mnist_mlp", {_V1_MNIST_NAMES.get(k, k): v for k, v in kwargs.items()}
        kwargs = dict(kwargs)
        return kwargs.pop("arch", None), kwargs
    if not isinstance(config.get("arch"), str) or not isinstance(kwargs, dict):
        raise ValueError(f"{config_path} names no arch and kwargs to rebuild the model from")
    return config["arch"], kwargs


def read_pretrained_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a saved model, as a dict; a missing or broken file is named (the
    evaluate command reads it before the weights)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; expected a save_pretrained directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a {type(config).__name__}; expected a JSON object")
    return config


def _model_card(config: dict[str, Any]) -> str:
    kwargs = config["kwargs"]
    training = config.get("training_config") or {}
    data = training.get("data", {})
    lines = [
        f"# cvae_seg model: {config['arch']}, objective {kwargs.get('objective')}",
        "",
        f"- built with: `cvae_seg.create_model({config['arch']!r}, **kwargs)`, kwargs as in "
        "config.json",
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


def _setting_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"model.{key}: checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


def load_model_state(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str | os.PathLike,
    saved_model_config: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
) -> None:
    """``model.load_state_dict(state_dict)``, refusing a misfit in a few lines.

    The error names the model settings that differ (given the checkpoint's and the current
    ``model`` config sections) and a few tensors that do not fit, instead of torch's list of
    every size mismatch.
    """
    mine = model.state_dict()
    misfits = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(value.shape)}"
        for key, value in mine.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    missing = [key for key in mine if key not in state_dict]
    unexpected = [key for key in state_dict if key not in mine]
    if not (misfits or missing or unexpected):
        model.load_state_dict(state_dict)
        return
    parts = []
    if saved_model_config is not None and model_config is not None:
        parts += _setting_differences(saved_model_config, model_config)
    for label, keys in (
        ("differ in shape", misfits),
        ("missing", missing),
        ("unexpected", unexpected),
    ):
        if keys:
            shown = "; ".join(keys[:3]) + ("; ..." if len(keys) > 3 else "")
            parts.append(f"{len(keys)} tensor(s) {label} ({shown})")
    raise ValueError(f"{source} does not fit the model the config builds: {'; '.join(parts)}")
