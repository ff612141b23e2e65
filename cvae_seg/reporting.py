"""Small helpers for result files: PNG pictures written atomically (through
`cvae_seg.io.atomic_write`, like every file we write), a hardware description, mean ± stderr."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch
from PIL import Image

from cvae_seg.io import atomic_write

__all__ = ["atomic_save_image", "describe_hardware", "mean_stderr"]


def atomic_save_image(path: str | os.PathLike, image: Image.Image) -> Path:
    """Save a PIL image as PNG, atomically (through `cvae_seg.io.atomic_write`)."""
    return atomic_write(path, lambda handle: image.save(handle, format="PNG", optimize=True))


def describe_hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU architecture and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    plural = "" if threads == 1 else "s"
    return f"CPU ({platform.processor() or platform.machine()}, {threads} thread{plural})"


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over runs (seeds); NaN error for a single run."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))
