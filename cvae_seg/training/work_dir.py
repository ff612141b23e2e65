"""The training run's work dir: made and cleared before a run, removed again when the run is
refused while being set up, warned about when it already holds a run, and given the
resolved config once the run has accepted it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import yaml

from cvae_seg import distributed
from cvae_seg.config import Config
from cvae_seg.io import atomic_write_text, remove_stale_temporaries

log = logging.getLogger(__name__)

__all__ = ["check_work_dir", "record_config", "removed_if_set_up_fails", "warn_of_an_earlier_run"]


def check_work_dir(work_dir: Path) -> None:
    """The work dir, made when missing and cleared of an interrupted write's leftovers. A
    path that is a file or cannot be made a folder is refused naming it (the ``check_``
    name marks this as reading the user's input for the command line's error rule)."""
    if work_dir.exists() and not work_dir.is_dir():
        raise NotADirectoryError(
            f"work dir {work_dir} is a file; expected a folder (made when missing)"
        )
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"work dir {work_dir} cannot be made: {error.strerror}") from None
    for folder in (work_dir, work_dir / "pretrained"):
        remove_stale_temporaries(folder)


@contextlib.contextmanager
def removed_if_set_up_fails(work_dir: Path) -> Iterator[None]:
    """Remove the folders this call made for ``work_dir`` when the run's set-up fails (bad
    data, a checkpoint that does not fit): a refused run leaves nothing behind. Only folders
    that are still empty go; a folder that was there before is never touched. Only the
    process that makes the folder (rank 0) removes it."""
    chain = (work_dir, *work_dir.parents) if distributed.is_main_process() else ()
    made = [folder for folder in chain if not folder.exists()]
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def warn_of_an_earlier_run(work_dir: Path) -> None:
    """Say that a fresh run replaces the one already in ``work_dir`` (as mmsegmentation, a
    fresh run writes over it; the warning keeps that from going unnoticed)."""
    earlier = [name for name in ("last.pt", "best.pt", "metrics.csv") if (work_dir / name).exists()]
    if earlier:
        log.warning(
            "work dir %s already holds a run (%s): this run starts from scratch and replaces "
            "it; --resume continues it instead", work_dir, ", ".join(earlier),
        )  # fmt: skip


def record_config(work_dir: Path, config: Config) -> None:
    """config.yaml: the resolved config, written once the run has accepted it (a resume
    that refuses the config leaves the record of the run it refused to continue)."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(work_dir / "config.yaml", text)
