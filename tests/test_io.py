"""cvae_seg.io: atomic writes survive a failing writer and a kill -9; leftovers are found."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvae_seg.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_name,
)

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    """The id of a process that has ended (ids are not reused within a test)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_text_bytes_and_callback_forms_write_the_file(tmp_path):
    assert atomic_write_text(tmp_path / "a" / "t.txt", "héllo\n").read_text() == "héllo\n"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.csv", lambda f: f.write("x,y\r\n"), mode="w", newline="")
    assert (tmp_path / "c.csv").read_bytes() == b"x,y\r\n"
    atomic_write_text(tmp_path / "b.bin", "replaced")
    assert (tmp_path / "b.bin").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "c.csv", "t.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "keep.txt", "old")

    def failing(handle):
        handle.write("half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, failing, mode="w")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="mode must contain 'w'"):
        atomic_write(target, lambda f: None, mode="rb")


KILLER = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("atomic_io", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

def write(handle):
    handle.write(b"new" * 100_000)
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # dies in the middle of the write

module.atomic_write(sys.argv[2], write)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_kill_during_a_write_keeps_the_old_file_and_the_leftover_is_removed(tmp_path):
    target = atomic_write_bytes(tmp_path / "last.pt", b"the good checkpoint")
    # cvae_seg/io.py loaded alone: the child needs no torch, so the test stays fast
    child = subprocess.run(
        [sys.executable, "-c", KILLER, str(ROOT / "cvae_seg" / "io.py"), str(target)],
        capture_output=True,
    )
    assert child.returncode == -9
    assert target.read_bytes() == b"the good checkpoint"
    (leftover,) = [p for p in tmp_path.iterdir() if p != target]
    assert leftover.name.startswith(".last.pt.tmp-") and leftover.stat().st_size > 0
    assert remove_stale_temporaries(tmp_path) == [leftover]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_cleanup_spares_live_writers_and_other_files(tmp_path):
    dead = tmp_path / f".last.pt.tmp-{_dead_pid()}"
    live = tmp_path / f".best.pt.tmp-{os.getppid()}"  # the parent runs: its write may be on
    mine = temporary_name(tmp_path / "metrics.csv")  # this process starts: nothing under way
    user = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "x.tmp-12"]
    old = tmp_path / f".curve.csv.tmp-{_dead_pid()}-7"  # a dead process's thread: also stale
    for path in [dead, live, mine, old, *user]:
        path.write_text("x")
    assert mine.name.startswith(f".metrics.csv.tmp-{os.getpid()}-")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([dead, mine, old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [live, *user])
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_two_threads_writing_one_file_at_once_both_succeed(tmp_path):
    """Each thread writes through its own temporary file: neither rename finds the other's
    file gone (two table runs scored at once fill the same data cache)."""
    import threading

    target, barrier, errors = tmp_path / "cache.npz", threading.Barrier(2), []

    def write(data: bytes) -> None:
        barrier.wait()
        try:
            for _ in range(50):
                atomic_write_bytes(target, data)
        except OSError as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(bytes([n]) * 4096,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.read_bytes() in (b"\1" * 4096, b"\2" * 4096)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
