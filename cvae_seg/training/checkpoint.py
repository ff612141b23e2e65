"""Checkpoints: what a resumable run saves, how it is read back, and which ones are kept.

A checkpoint holds the model, optimizer, scheduler, AMP scaler, step, the best metric so far,
every RNG state (torch, CUDA, numpy, python; one set per process) and the sampler position,
so that N steps plus a resumed N steps give the same weights as 2N steps.
"""

from __future__ import annotations

import logging
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvae_seg.hub import load_model_state
from cvae_seg.io import atomic_write

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointSaver",
    "load_checkpoint",
    "load_model_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """This process's random states: torch, every CUDA device, numpy and python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA states only where there are GPUs).

    The states go back as CPU byte tensors, as torch requires: a checkpoint loaded with
    ``map_location="cuda"`` (as a resume on the GPU does) brings them on the GPU.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format version) atomically: never a half-written file."""
    payload = {"version": CHECKPOINT_VERSION, **state}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def _folder_given(path: Path) -> str:
    """Say which checkpoint file a folder holds, or its run's (a ``pretrained`` export sits
    inside the work dir that holds last.pt, and holds no training state itself)."""
    candidates = [path / "last.pt", path / "best.pt", path.parent / "last.pt"]
    found = next((c for c in candidates if c.is_file()), path / "last.pt")
    export = (
        " (a save_pretrained folder holds weights only)" if (path / "config.json").exists() else ""
    )
    return f"checkpoint {path} is a folder{export}; expected a .pt file such as {found}"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `train`, with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(_folder_given(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix in (".yaml", ".yml"):
        raise ValueError(
            f"checkpoint {path} is a YAML config; expected a .pt file written by training "
            "(the commands take the config first, then the checkpoint)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        if not zipfile.is_zipfile(path):  # what torch.save has written since torch 1.6
            raise ValueError(
                f"checkpoint {path} could not be read: torch.save writes a zip archive and "
                "this file is none (not a torch checkpoint, or a truncated one); expected a "
                ".pt file written by training"
            ) from error
        raise ValueError(
            f"checkpoint {path} could not be read ({error}); is it truncated?"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a cvae_seg checkpoint (no model and config in it)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has version {state.get('version')}; this cvae_seg reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return state


class CheckpointSaver:
    """Keeps ``last.pt`` (every evaluation), ``best.pt`` and its shareable export
    ``pretrained/`` (when the tracked metric improves), and counts evaluations without gain
    for early stopping.

    Every process tracks the metric (it is pooled over processes, so they agree and stop
    together); only the one with ``write=True`` (rank 0) touches files.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike,
        metric: str,
        patience: int | None = None,
        write: bool = True,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.metric, self.patience, self.write = metric, patience, write
        self.lower_is_better = metric == "nll"
        self.best: float | None = None
        self.evals_since_best = 0

    @property
    def last_path(self) -> Path:
        return self.work_dir / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the saver (the keys `load_state_dict` reads)."""
        return {"best": self.best, "evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.evals_since_best = state["best"], state["evals_since_best"]

    def update(self, metrics: dict[str, Any]) -> bool:
        """Record an evaluation; True when it is the best so far."""
        score = metrics[self.metric]
        best = self.best
        improved = best is None or (score < best if self.lower_is_better else score > best)
        if improved:
            self.best, self.evals_since_best = score, 0
        else:
            self.evals_since_best += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """True after ``patience`` evaluations in a row without gain."""
        return self.patience is not None and self.evals_since_best >= self.patience

    def save(self, state: dict[str, Any], model: Any, improved: bool) -> None:
        """Write ``state`` (with this saver's best and count) as last.pt and, when
        ``improved``, as best.pt plus ``model.save_pretrained`` into pretrained/.

        last.pt comes last: it records this evaluation as the best so far, so a run killed
        after it but before best.pt would resume believing best.pt written and never write
        it. Killed before it, the run resumes from the previous last.pt and writes all three
        again.
        """
        if not self.write:
            return
        state = {**state, **self.state_dict()}
        if improved:
            save_checkpoint(self.work_dir / "best.pt", state)
            model.save_pretrained(
                self.work_dir / "pretrained",
                training_config=state.get("config"),
                classes=state.get("classes"),
                metrics=state.get("metrics"),
            )
        save_checkpoint(self.last_path, state)
