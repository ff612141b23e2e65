"""benchmarks/device_lfw_run.py: one run of the LFW table trained and scored in one call (as on
the lent GPU machine; here on the CPU), its kept files packed into one tar, which the table's
score stage restores and reports like any kept run, costed apart as a GPU run."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import device_lfw_run
import lfw_study
import pytest
from test_lfw_study import TINY, _write_lfw

ROOT = Path(__file__).resolve().parents[1]
RUN = "table/CNN_NI/seed1"


@pytest.mark.slow
def test_a_device_run_comes_back_as_a_kept_run_costed_in_gpu_minutes(tmp_path, monkeypatch):
    data = _write_lfw(tmp_path / "lfw")
    monkeypatch.setattr(device_lfw_run, "gpu_name", lambda: "Test GPU")
    tiny = [f"--set={override}" for override in TINY]
    argv = ["--row", "CNN (NI)", "--seed", "1", "--source", str(ROOT), "--trained-at", "abc",
            "--scored-at", "def", "--data-root", str(data), "--cache-dir", str(tmp_path / "cache"),
            "--runs", str(tmp_path / "device_runs"), "--samples", "3", "--device", "cpu",
            "--threads", "1", "--out", str(tmp_path / "kept.tar"), *tiny]  # fmt: skip
    assert device_lfw_run.main(argv) == 0
    keep = tmp_path / "keep"
    with tarfile.open(tmp_path / "kept.tar") as tar:
        names = set(tar.getnames())
        tar.extractall(keep, filter="data")
    kept = ("run.json", "curve.csv", "done.json", "test.json", "samples.json")
    assert {f"{RUN}/{name}" for name in kept} <= names
    assert not any(name.endswith(".pt") for name in names)  # never a checkpoint
    test = json.loads((keep / RUN / "test.json").read_text())
    assert (test["model"], test["trained_at"], test["scored_at"]) == ("CNN (NI)", "abc", "def")
    calls = json.loads((keep / RUN / "run.json").read_text())["calls"]
    assert calls[-1]["device"] == "Test GPU" and calls[-1]["exit_code"] == 0

    # the table's kept choice of recipe, which restoring checks each kept run against
    choice = {"recipe": "r18_b16_cosine", "by": "given with --recipe", "at": "2026-12-04"}
    (keep / "choices.json").write_text(json.dumps({"recipe": choice}))
    summary = tmp_path / "summary.json"
    argv = ["--stage", "score", "--data-root", str(data), "--runs", str(tmp_path / "runs"),
            "--no-worktree", "--keep", str(keep), "--summary", str(summary), "--samples", "3",
            *tiny]  # fmt: skip
    assert lfw_study.main(argv) == 0
    report = json.loads(summary.read_text())
    (record,) = [r for r in report["records"] if r["model"] == "CNN (NI)"]
    assert record["trained_on"] == "Test GPU" and record["pixel_accuracy"] == test["pixel_accuracy"]
    cost = report["models"]["CNN (NI)"]
    assert cost["cpu_hours"] is None and cost["gpu"]["seeds"] == [1]
    assert cost["gpu"]["minutes"] == pytest.approx(calls[-1]["wall_s"] / 60, abs=0.01)
    assert "on an Test GPU (seed 1)" in summary.with_suffix(".md").read_text()


def test_a_row_that_is_not_trained_is_refused_by_name(capsys):
    argv = ["--row", "ensemble (NI, apart)", "--source", ".", "--trained-at", "a",
            "--scored-at", "b", "--data-root", ".", "--out", "x.tar"]  # fmt: skip
    assert device_lfw_run.main(argv) == 2
    assert "'ensemble (NI, apart)' is not a trained row" in capsys.readouterr().err
