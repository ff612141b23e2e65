"""benchmarks/known_truth_ece_floor.py: the ECE that averaging S exact samples leaves."""

from __future__ import annotations

import json
from pathlib import Path

import known_truth_ece_floor
import numpy as np
import torch
from known_truth_eval import evaluation_set

from cvae_seg.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "known_truth.yaml"
SMALL = ["data.shapes_val=60"]


def test_the_label_s_own_candidate_is_perfectly_calibrated() -> None:
    """The plumbing: each image's drawn candidate, given all the weight, predicts its label
    on every occluded pixel with confidence 1, so its ECE is 0; the other candidates' is not."""
    truth, _, labels = evaluation_set(load_config(CONFIG, SMALL), "test")
    one_hot = known_truth_ece_floor._one_hot_candidates(truth.candidates, 2)
    target = labels.masked_fill(~torch.from_numpy(truth.hidden), known_truth_ece_floor.HIDDEN)
    own = np.eye(len(truth.probs))[truth.modes]
    assert known_truth_ece_floor.ece_of(own, one_hot, target) == 0.0
    other = np.eye(len(truth.probs))[(truth.modes + 1) % len(truth.probs)]
    assert known_truth_ece_floor.ece_of(other, one_hot, target) > 0.1


def test_more_exact_samples_leave_less_ece(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    argv = [str(CONFIG), *(f"--set={o}" for o in SMALL), "--samples", "1", "256",
            "--repeats", "3", "--out", str(out)]  # fmt: skip
    assert known_truth_ece_floor.main(argv) == 0
    (task,) = json.loads(out.read_text())["tasks"]
    one, many = (task["samples"][s]["mean"] for s in ("1", "256"))
    assert task["images"] == 60 and len(task["samples"]["1"]["values"]) == 3
    assert 1 >= one > many >= 0 and one > task["marginal"] >= 0
    assert known_truth_ece_floor.main([str(tmp_path / "none.yaml"), "--out", str(out)]) == 2
