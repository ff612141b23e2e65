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
import shutil
from collections.abc import Sequence
from pathlib import Path

LOCK = "lock"  # the file a run's trainer holds (flock) while it trains the run


def copy_kept(source: Path, target: Path, names: Sequence[str], mark: str) -> list[Path]:
    """Copy those of ``names`` that ``source`` holds into ``target``, ``mark`` (the file
    whose presence says "finished") last, so a copy cut short never looks finished."""
    target.mkdir(parents=True, exist_ok=True)
    present = [name for name in names if (source / name).is_file()]
    for name in sorted(present, key=lambda name: name == mark):
        shutil.copy2(source / name, target / name)
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
