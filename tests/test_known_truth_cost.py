"""benchmarks/known_truth_cost.py: each planned model's update timed in one run, as ratios."""

from __future__ import annotations

import json

import known_truth_cost
import pytest


def test_every_planned_model_is_timed_and_the_estimate_adds_them_up(tmp_path):
    out = tmp_path / "costs.json"
    argv = ["--budget", "ci", "--heads", "cvae", "ssn", "--objectives", "cnn", "cvae",
            "--seeds", "0", "1", "--steps", "10", "--repeats", "2", "--warmup", "1",
            "--out", str(out)]  # fmt: skip
    result = known_truth_cost.main(argv)
    assert json.loads(out.read_text()) == result
    seconds = result["seconds_per_update"]
    assert list(seconds) == ["cnn", "cvae", "ssn"] and all(s > 0 for s in seconds.values())
    assert result["ratio_to_cvae"]["cvae"] == 1.0
    assert result["ratio_to_cvae"]["ssn"] == pytest.approx(seconds["ssn"] / seconds["cvae"])
    per_update = sum(seconds.values())
    assert result["training_hours_in_all"] == pytest.approx(per_update * 10 * 1 * 2 / 3600)


def test_the_ratios_need_the_cvae_in_the_run():
    with pytest.raises(SystemExit, match="cvae objective"):
        known_truth_cost.main(["--budget", "ci", "--objectives", "cnn", "--repeats", "1"])
