"""Atomic file writes: the one way cvae_seg writes a file that a crash must not spoil.

Every checkpoint, table, config, report and cache goes through `atomic_write`: the content is
written to a temporary file in the target's folder (same file system, so the rename is
atomic), flushed and fsynced, then renamed over the target with `os.replace`. A process killed
at any moment leaves either the old file or the new one, never a mixture; at worst a
temporary file is left behind, named ``.<name>.tmp-<pid>`` so that `remove_stale_temporaries`
can find and remove it at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
    "temporary_name",
]

log = logging.getLogger(__name__)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:-\d+)?$")


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary file that `atomic_write` uses for ``path`` in this process and thread
    (two threads writing one file at once, each a whole copy, must not share one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def _fsync_folder(folder: Path) -> None:
    # the rename itself must reach the disk too; folders cannot be opened on Windows
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], Any],
    mode: str = "wb",
    **open_kwargs: Any,
) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``.

    ``mode`` and ``open_kwargs`` go to `open` ("wb" for torch.save, PIL or safetensors bytes;
    "w" with ``newline=""`` for csv). The parent folder is created when missing. If ``write``
    raises, the temporary file is removed and ``path`` is untouched.

    Examples: ``atomic_write(p, lambda f: torch.save(state, f))``,
    ``atomic_write(p, lambda f: image.save(f, format="PNG"))``.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write writes a new file: mode must contain 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text), mode="w", encoding=encoding)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is starting: none of its writes is under way
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or no signals on this platform
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted `atomic_write` calls left in ``folder``.

    Only files named as `temporary_name` names them are touched, and only those of processes
    that no longer run (a concurrent writer keeps its file). Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in sorted(folder.iterdir()):
        match = _TEMPORARY.match(candidate.name)
        if match is None or not candidate.is_file() or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    if removed:
        log.info(
            "removed %d unfinished temporary file(s) in %s: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed
