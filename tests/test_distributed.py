"""Multi-process training under torchrun (gloo, 2 CPU processes) against one process.

Every test here starts torchrun processes (tens of seconds on 2 cores): all are marked slow.
The samplers' sharding is tested without processes in test_training_samplers.py.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvae_seg.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.size=32",
    "data.batch_size=8",  # global: 4 per process with 2 processes
    "data.num_workers=0",
    "data.shapes_train=48",
    "data.shapes_val=12",
    "data.noise=0.4",
    "eval.batch_size=4",
    "eval.num_samples=2",
    "train.log_interval=1",
]


def _run(work_dir, *args, processes=2, script=ROOT / "tools" / "train.py", timeout=240):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [*command, str(script), str(ROOT / "configs" / "demo.yaml"), "--quiet",
         "--work-dir", str(work_dir), *TINY, *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip


def _losses(work_dir):
    with open(work_dir / "train.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = _run(work_dir, "train.max_steps=6", "train.eval_interval=3")
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(two_process_run, tmp_path):
    single = _run(tmp_path / "single", "train.max_steps=6", "train.eval_interval=3", processes=1)
    assert single.returncode == 0, single.stderr[-3000:]
    # the same global batches; what differs is BatchNorm's statistics (over 4 images per
    # process instead of 8) and the latent noise, so the curves agree closely, not exactly
    expected, got = _losses(tmp_path / "single"), _losses(two_process_run)
    assert len(got) == len(expected) == 6
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), rtol=0.03)
    assert got[-1] < got[0]


@pytest.mark.slow
def test_only_rank_zero_writes_one_checkpoint(two_process_run):
    assert sorted(p.name for p in two_process_run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(two_process_run.glob(".*.tmp-*"))
    state = load_checkpoint(two_process_run / "last.pt")
    assert state["world_size"] == 2 and len(state["rng_by_rank"]) == 2
    assert state["step"] == 6
    assert not any(key.startswith("module.") for key in state["model"])  # loads without DDP
    with open(two_process_run / "metrics.csv", newline="") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["3", "6"]


@pytest.mark.slow
def test_resumed_two_process_run_continues_the_same_run(two_process_run, tmp_path):
    first = _run(tmp_path / "resumed", "train.max_steps=3", "train.eval_interval=3")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(tmp_path / "resumed", "--resume", "train.max_steps=6", "train.eval_interval=3")
    # (an override right after a bare --resume is taken as an override, not as the path)
    assert second.returncode == 0, second.stderr[-3000:]
    straight = load_checkpoint(two_process_run / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    assert _losses(tmp_path / "resumed") == _losses(two_process_run)


@pytest.mark.slow
def test_a_crash_in_one_process_ends_the_job_with_its_error(tmp_path):
    result = _run(
        tmp_path / "crash",
        "train.max_steps=6",
        script=ROOT / "tests" / "helpers" / "failing_rank.py",
        timeout=180,  # a hang would end in subprocess.TimeoutExpired
    )
    assert result.returncode != 0
    assert "injected failure in rank 1" in result.stdout + result.stderr
