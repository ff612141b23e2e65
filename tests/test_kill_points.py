"""SIGKILL at every kind of moment of a training run, then resume: nothing lost.

A real training process is killed (``kill -9`` from inside, so the moment is exact) in a
training step, in a validation, and in the middle of writing each file the run keeps
(last.pt, best.pt, the exported weights, train.csv, metrics.csv). Each time the files on disk
are the last good ones, the interrupted write's leftover is cleaned at the resume, and the
resumed run ends with the weights and logs of a run that was never killed. docs/reliability.md
counts these kill points.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONFIG, TINY_DEMO, tiny_demo_config, torch_threads

from cvae_seg import from_pretrained
from cvae_seg.training import load_checkpoint, train

RUN = ["train.max_steps=6", "train.eval_interval=2", "train.log_interval=3"]

# the child: tools/train.py's work, killed at the `nth` moment of one kind
DIES_AT = """
import os, signal, sys
from pathlib import Path
import cvae_seg.training.loop as loop
from cvae_seg.config import load_config

kind, target, nth = sys.argv[3], sys.argv[4], int(sys.argv[5])
seen = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counting(function):
    def wrapped(*args, **kwargs):
        seen.append(1)
        if len(seen) == nth:
            die()
        return function(*args, **kwargs)
    return wrapped

if kind == "call":  # in loop.train_step or loop.validate
    setattr(loop, target, counting(getattr(loop, target)))
else:  # in writing `target`: half the new file is on disk, not yet renamed into place
    replace = os.replace
    def dying_replace(source, destination):
        if Path(destination).name == target:
            seen.append(1)
            if len(seen) == nth:
                data = Path(source).read_bytes()
                Path(source).write_bytes(data[: len(data) // 2])
                die()
        return replace(source, destination)
    os.replace = dying_replace
loop.train(load_config(sys.argv[1], sys.argv[6:]), sys.argv[2], progress=False)
"""

KILL_POINTS = {
    "in_training_step_3": ("call", "train_step", 3),
    "in_validation_2": ("call", "validate", 2),
    "writing_last_pt_2": ("write", "last.pt", 2),
    "writing_best_pt_1": ("write", "best.pt", 1),
    "writing_exported_weights_1": ("write", "model.safetensors", 1),
    "writing_train_csv_1": ("write", "train.csv", 1),
    "writing_metrics_csv_2": ("write", "metrics.csv", 2),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [
            {k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run that was never killed."""
    work = tmp_path_factory.mktemp("straight")
    with torch_threads(1):  # as the killed subprocess runs
        train(tiny_demo_config(*RUN), work, progress=False)
    return work


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_then_resumed_ends_as_the_run_never_killed(point, straight, tmp_path):
    kind, target, nth = KILL_POINTS[point]
    work = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    argv = [DEMO_CONFIG, work, kind, target, nth, *TINY_DEMO, *RUN]
    killed = subprocess.run(
        [sys.executable, "-c", DIES_AT, *map(str, argv)], capture_output=True, text=True, env=env
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    kept = load_checkpoint(work / "last.pt")  # the last good checkpoint reads back
    with torch_threads(1):  # as the killed subprocess and the straight run
        train(tiny_demo_config(*RUN), work, resume=work / "last.pt", progress=False)
    assert not [p for p in work.rglob(".*.tmp-*")], "an interrupted write was left behind"
    a, b = load_checkpoint(work / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["step"] == b["step"] == 6 and kept["step"] < 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    for log in ("train.csv", "metrics.csv"):
        assert _rows(work / log) == _rows(straight / log), log
    best = load_checkpoint(work / "best.pt")  # written again when the kill came before it
    assert best["step"] == load_checkpoint(straight / "best.pt")["step"]
    from_pretrained(work / "pretrained")  # the export reads back
