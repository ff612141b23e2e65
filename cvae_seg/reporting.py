"""Small helpers for result files: atomic writes and a hardware description."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["atomic_write_text", "describe_hardware"]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def describe_hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU architecture and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
