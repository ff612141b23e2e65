"""The known-truth benchmark's runs: each (K, model, seed) trained and scored once, resumable.

A run lives in WORK/<budget>_<steps>steps/K<k>/<model>/seed<n>. Its row of the report (the
scores, as evaluated) is kept in result.json, written atomically when its evaluation ends,
and never recomputed: the same command again takes it as it is. An unfinished run resumes
from its last.pt, which the benchmark has written every `CHECKPOINT_INTERVAL` updates, and
goes on bit for bit as it would have without the stop (`cvae_seg.training.train`'s resume).
So a side-by-side run of many CPU-hours survives the end of a session.

A run being trained or scored holds an exclusive lock on its folder (flock on ``lock``, let
go by the system when the process ends, however it ends), so that several processes started
with the same command share the work: each takes the next run that nobody holds and nobody
finished. The report each one writes lists every finished run; the last to finish lists all.

A run whose training goes non-finite is kept as failed, with its message, and left out of
the means (the report lists it); remove its folder to train it again.

Kept copies (`keep`, `restore`): a finished run's small files (its result, config, timing and
figure rows, never its checkpoints) can be copied to a second folder, for example one under
results/ that is committed as the runs finish. A later call, on a machine where the work dir
is gone, copies them back first and takes those runs as finished; only the unfinished ones
train again.

Time: each call's wall seconds, kept in timing.json (and the part of them spent training). A
call that was stopped counts up to its last checkpoint (what came after was lost and is
trained again by the next call).
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml
from kept_runs import LOCK, KeptFileError, copy_kept, read_json, restore_run

from cvae_seg.config import Config
from cvae_seg.io import atomic_write_text
from cvae_seg.training import train

CHECKPOINT_INTERVAL = 500  # updates between the last.pt writes of a known-truth run
RESULT, TIMING = "result.json", "timing.json"
KEPT = (RESULT, TIMING, "config.yaml", "figure_samples.npz")  # what `keep` copies of a run


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The run's kept row of the report, or None when it has not finished."""
    return read_json(run_dir / RESULT)


def keep(run_dir: Path, kept_dir: Path) -> list[Path]:
    """Copy the finished run's small files (`KEPT`) to kept_dir; the copies made. A failed
    run is not kept: a later machine trains it again."""
    row = finished(run_dir)
    if row is None:
        raise ValueError(f"{run_dir}: not finished, nothing to keep")
    if "failed" in row:
        return []
    return copy_kept(run_dir, kept_dir, KEPT, RESULT)


def restore(kept_runs: Path, runs_dir: Path, names: list[str]) -> list[Path]:
    """Copy the kept finished runs ``names`` (K<k>/<model>/seed<n>, under kept_runs) into
    runs_dir where that run has not finished there (`kept_runs.restore_run`); a failed run
    is not restored. The caller checks the kept runs' settings first (`check_same_config`,
    `check_same_scoring`). The runs restored."""
    restored = []
    for name in names:
        kept = finished(kept_runs / name)
        if kept is None or "failed" in kept:
            continue
        if restore_run(kept_runs / name, runs_dir / name, KEPT, RESULT):
            restored.append(runs_dir / name)
    return restored


@contextmanager
def claimed(run_dir: Path) -> Iterator[IO[str] | None]:
    """The run's lock while the block runs; None when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / LOCK).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OtherSettings(ValueError):
    """A run folder holds a run made with other settings than the command's."""


__all__ = ["KeptFileError", "OtherSettings", "claimed", "finished", "keep", "restore",
           "train_and_score"]  # fmt: skip


def check_same_config(run_dir: Path, config: Config) -> None:
    """Refuse a run folder made with other settings (another --extra, a changed config
    file): resumed, its checkpoint would go on under settings it never had; finished, its
    kept result would stand in the report for a model the command did not ask for."""
    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        return
    before = yaml.safe_load(recorded.read_text())
    now = config.model_dump(mode="json")
    defaults = type(config)().model_dump(mode="json")  # a key added since: its default
    changed = sorted(
        f"{section}.{key}"
        for section in now
        for key in now[section]
        if before.get(section, {}).get(key, defaults[section][key]) != now[section][key]
    )
    if changed:
        raise OtherSettings(
            f"{run_dir} was made with other settings ({', '.join(changed)} differ); "
            "give another --work-dir or remove that folder to start it again"
        )


def check_same_scoring(run_dir: Path, scoring: dict[str, Any]) -> None:
    """Refuse a kept result scored another way (another split, hit distance or evaluation
    budget): the report would label it with this command's protocol."""
    kept = finished(run_dir)
    if kept is not None and kept.get("scoring") != scoring:
        raise OtherSettings(
            f"{run_dir / RESULT} was scored with {kept.get('scoring')}, this command scores "
            f"with {scoring}; give another --work-dir or remove that folder to score it again"
        )


def code_commit() -> str:
    """The commit of the code this process runs (the checkout benchmarks/ lies in), with
    "+dirty" when tracked files differ from it; "unknown" outside a git checkout."""

    def git(*args: str) -> str:
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "-uno")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _calls(run_dir: Path) -> list[dict[str, float | None]]:
    """The earlier calls, a stopped one counted up to its last checkpoint."""
    path = run_dir / TIMING
    calls = json.loads(path.read_text())["calls"] if path.is_file() else []
    last = run_dir / "last.pt"
    for call in calls:
        if call["end"] is None:  # stopped: the work after last.pt was lost
            saved = last.stat().st_mtime if last.is_file() else call["start"]
            call["end"] = max(call["start"], saved)
    return calls


def _write_calls(run_dir: Path, calls: list[dict[str, float | None]]) -> None:
    atomic_write_text(run_dir / TIMING, json.dumps({"calls": calls}, indent=1))


def train_and_score(
    run_dir: Path,
    config: Config,
    identity: dict[str, Any],
    score: Callable[[], dict[str, Any]],
    device: str,
) -> dict[str, Any]:
    """Train the run (resuming from its last.pt when there is one), then ``score()`` it; the
    row (``identity``, the scores as ``test``, the run's ``seconds``, the training's
    ``train_seconds`` and the ``commits`` of the code its calls ran) is kept as result.json.
    A run whose training goes non-finite is kept as failed, with the message: it would fail
    again the same way, so it does not hold up the runs after it. Call it while holding the
    run (`claimed`), after `check_same_config`."""
    calls = [*_calls(run_dir), {"start": time.time(), "end": None, "commit": code_commit()}]
    _write_calls(run_dir, calls)
    last = run_dir / "last.pt"
    try:
        train(config, run_dir, resume=last if last.is_file() else None, device=device,
              progress=False)  # fmt: skip
        calls[-1]["trained"] = time.time()
        row = {**identity, "test": score()}
    except FloatingPointError as error:
        row = {**identity, "failed": str(error)}
    calls[-1]["end"] = time.time()
    _write_calls(run_dir, calls)
    row["commits"] = sorted({call["commit"] for call in calls if call.get("commit")})
    row["seconds"] = round(sum(call["end"] - call["start"] for call in calls), 1)
    row["train_seconds"] = round(
        sum(call.get("trained", call["end"]) - call["start"] for call in calls), 1
    )
    atomic_write_text(run_dir / RESULT, json.dumps(row, indent=1))
    return row
