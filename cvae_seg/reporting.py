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

__all__ = ["atomic_save_image", "cpu_name", "describe_hardware", "mean_stderr"]


def atomic_save_image(path: str | os.PathLike, image: Image.Image) -> Path:
    """Save a PIL image as PNG, atomically (through `cvae_seg.io.atomic_write`)."""
    return atomic_write(path, lambda handle: image.save(handle, format="PNG", optimize=True))


def cpu_name() -> str:
    """The CPU's model name as Linux reports it, else what `platform` knows (often just the
    architecture): machines of one kind differ in speed, so a timing names its CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU's name, architecture and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    plural = "" if threads == 1 else "s"
    names = dict.fromkeys((cpu_name(), platform.machine()))  # once where they are the same
    return f"CPU ({', '.join(filter(None, names))}, {threads} thread{plural})"


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over runs (seeds); NaN error for a single run."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))
