"""Kept copies of finished runs: a long study's small files, outside its work dir.

A study of many CPU-hours outlives its sessions only if what it has finished outlives the
machine. Checkpoints are too big to keep in the repo, so each study names the few small
files that stand for a finished run (its scores, config, curve), copies them to a kept folder
as each run finishes (`copy_kept`), and copies them back into a new work dir (`restore_run`)
before training what is missing. The studies' own modules say which files
(benchmarks/known_truth_runs.py, benchmarks/lfw_study_table.py).
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvae_seg.io import atomic_write_bytes

LOCK = "lock"  # the file a run's trainer holds (flock) while it trains the run


class KeptFileError(ValueError):
    """A run's or a study's file that cannot be read (cut short, edited by hand)."""


def read_json(path: Path) -> Any:
    """The JSON file's content, None when there is none; a damaged one is a `KeptFileError`
    that names it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        message = f"{path}: not valid JSON ({error}); remove it or put back a good copy"
        raise KeptFileError(message) from None


def copy_kept(source: Path, target: Path, names: Sequence[str], mark: str) -> list[Path]:
    """Copy those of ``names`` that ``source`` holds into ``target``, each file whole or not
    at all (an atomic write: the kept folder may be committed or read while a run is kept),
    ``mark`` (the file whose presence says "finished") last, so a copy cut short never
    looks finished."""
    target.mkdir(parents=True, exist_ok=True)
    present = [name for name in names if (source / name).is_file()]
    for name in sorted(present, key=lambda name: name == mark):
        atomic_write_bytes(target / name, (source / name).read_bytes())
    return [target / name for name in present]


def restore_run(source: Path, target: Path, names: Sequence[str], mark: str) -> bool:
    """Put the kept run ``source`` in place of ``target`` unless ``target`` has finished
    (holds ``mark``) or another process holds its `LOCK`; a partial run there (its
    checkpoints) is removed first. Whether it was restored."""
    if (target / mark).is_file():
        return False
    target.mkdir(parents=True, exist_ok=True)
    with (target / LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # being trained here: left to that process
        if (target / mark).is_file():
            return False
        for stale in target.iterdir():
            if stale.name != LOCK:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        copy_kept(source, target, names, mark)
    return True
