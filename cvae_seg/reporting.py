"""Small helpers for result files: atomic writes, a hardware description, mean ± stderr."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch
from PIL import Image

__all__ = ["atomic_save_image", "atomic_write_text", "describe_hardware", "mean_stderr"]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def atomic_save_image(path: str | os.PathLike, image: Image.Image) -> Path:
    """Save a PIL image as PNG through a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


def describe_hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU architecture and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over runs (seeds); NaN error for a single run."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))
