"""cvae_seg.training.checkpoint: what is kept, how it reads back, and a kill while saving."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_DEMO, tiny_demo_config, torch_threads

from cvae_seg.training import CheckpointSaver, load_checkpoint, save_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


_config = tiny_demo_config


class _Exported:
    def __init__(self):
        self.calls = []

    def save_pretrained(self, directory, **metadata):
        self.calls.append((Path(directory).name, metadata["metrics"]))


def test_saver_keeps_last_and_best_and_counts_for_patience(tmp_path):
    saver = CheckpointSaver(tmp_path, "pixel_accuracy", patience=2)
    model = _Exported()
    for step, score in enumerate([50.0, 60.0, 55.0, 58.0], start=1):
        improved = saver.update({"pixel_accuracy": score})
        state = {"model": {}, "config": {}, "step": step, "metrics": {"step": step}}
        saver.save(state, model, improved)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 2 and best["best"] == 60.0 and best["evals_since_best"] == 0
    assert model.calls == [("pretrained", {"step": 1}), ("pretrained", {"step": 2})]
    assert saver.should_stop and saver.state_dict() == {"best": 60.0, "evals_since_best": 2}
    nll = CheckpointSaver(tmp_path / "nll", "nll", write=False)
    assert nll.update({"nll": 3.0}) and nll.update({"nll": 2.0}) and not nll.update({"nll": 2.5})
    nll.save({"model": {}, "config": {}}, model, improved=True)
    assert not (tmp_path / "nll").exists() and not nll.should_stop  # no patience: never stops


def test_broken_checkpoints_are_named(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(1000)}, "config": {}})
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt could not be read"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")  # torch: "Memo value not found"
    with pytest.raises(ValueError, match=r"notes\.pt could not be read: .*\(not a torch check"):
        load_checkpoint(tmp_path / "notes.pt")
    (tmp_path / "pretrained").mkdir()  # the run's export: its folder's last.pt is meant
    (tmp_path / "pretrained" / "config.json").write_text("{}")
    with pytest.raises(IsADirectoryError, match=r"weights only\); expected a \.pt file such as "
                       + re.escape(str(tmp_path / "last.pt"))):  # fmt: skip
        load_checkpoint(tmp_path / "pretrained")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt is not a cvae_seg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"model": {}, "config": {}, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=r"future\.pt has version 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


DIES_IN_THE_SECOND_SAVE_OF_LAST_PT = """
import os, signal, sys
import torch
from cvae_seg.config import load_config
from cvae_seg.training import train

saves, save = [], torch.save

def dying_save(obj, handle, *args, **kwargs):
    saves.append(handle.name)
    if len([s for s in saves if ".last.pt.tmp-" in s]) == 3:  # last.pt at steps 0, 2, 4
        handle.write(b"half a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, handle, *args, **kwargs)

torch.save = dying_save
train(load_config(sys.argv[1], sys.argv[3:]), sys.argv[2], progress=False)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_kill_while_saving_keeps_the_last_good_checkpoint_and_resume_cleans_up(tmp_path):
    overrides = [*TINY_DEMO, "train.max_steps=6", "train.eval_interval=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", DIES_IN_THE_SECOND_SAVE_OF_LAST_PT,
         str(ROOT / "configs" / "demo.yaml"), str(tmp_path / "run"), *overrides],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(list((tmp_path / "run").glob(".last.pt.tmp-*"))) == 1  # the interrupted write
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2  # the last good one
    config = _config("train.max_steps=6", "train.eval_interval=2")
    with torch_threads(1):  # as the killed subprocess ran: bit-for-bit needs the same threads
        resumed = train(config, tmp_path / "run", resume=tmp_path / "run" / "last.pt",
                        progress=False)  # fmt: skip
        straight = train(config, tmp_path / "straight", progress=False)
    assert not list((tmp_path / "run").glob(".*.tmp-*"))  # cleaned at the start
    a = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert resumed["step"] == straight["step"] == 6
