"""benchmarks/latent_information.py: three decodings of the same images, scored alike."""

from __future__ import annotations

import json

import latent_information
import pytest
import torch
from conftest import DEMO_CONFIG, TINY_DEMO, tiny_demo_config

from cvae_seg.cli import run
from cvae_seg.training import dataset_for, load_trained


def _train(tmp_path, objective: str):
    work_dir = tmp_path / objective
    run(["train", str(DEMO_CONFIG), *TINY_DEMO, f"model.objective={objective}",
         "train.max_steps=3", "--work-dir", str(work_dir), "--quiet"])  # fmt: skip
    return work_dir / "best.pt"


def test_the_three_accuracies_score_the_model_on_the_same_pixels(tmp_path):
    checkpoint = _train(tmp_path, "cvae")
    out = tmp_path / "latent.json"
    argv = [str(DEMO_CONFIG), str(checkpoint), *TINY_DEMO, "--images", "6", "--batch", "4",
            "--samples", "3", "--out", str(out)]  # fmt: skip
    report = latent_information.main(argv)
    assert json.loads(out.read_text()) == report and report["images"] == 6
    model, _, _ = load_trained(checkpoint, torch.device("cpu"))
    items = [dataset_for(tiny_demo_config(), "val")[i] for i in range(6)]
    x = torch.stack([item["image"] for item in items])
    y = torch.stack([item["mask"] for item in items])
    accuracy = report["pixel_accuracy"]
    predicted = (model.predict(x).argmax(1) == y).float().mean().item()
    assert accuracy["prediction"] == pytest.approx(100 * predicted)
    z = model.posterior(x, y).mean.unsqueeze(0)
    decoded = (model.decode(x, z)[0].argmax(1) == y).float().mean().item()
    assert accuracy["posterior_mean"] == pytest.approx(100 * decoded)
    assert 0 <= accuracy["prior_sample"] <= 100


def test_a_model_without_a_recognition_net_is_refused_by_name(tmp_path, capsys):
    checkpoint = _train(tmp_path, "gsnn")
    with pytest.raises(SystemExit):
        latent_information.main([str(DEMO_CONFIG), str(checkpoint), *TINY_DEMO])
    assert f"{checkpoint}: the model has no recognition net" in capsys.readouterr().err
