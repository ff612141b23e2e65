"""benchmarks/segmentation.py end to end on a tiny LFW tree (tiny model, two updates)."""

import json
from pathlib import Path

import pytest
from helpers.layouts import write_lfw

ROOT = Path(__file__).resolve().parents[1]

import segmentation as segmentation_benchmark  # noqa: E402


@pytest.mark.slow
def test_segmentation_benchmark_writes_tables_2_to_4(tmp_path):
    root = write_lfw(tmp_path / "lfw", side=32)
    out = tmp_path / "report"
    tiny = ["model.encoder_name=tu-test_resnet", "data.size=32", "data.batch_size=3",
            "train.max_steps=2", "train.eval_interval=2", "eval.batch_size=2"]  # fmt: skip
    report = segmentation_benchmark.main(
        ["--data-root", str(root), "--work-dir", str(tmp_path / "work"), "--out", str(out),
         "--rows", "GDNN (msc, NI)", "CVAE (msc, NI)", "--seeds", "0", "1",
         "--extra", *tiny]
    )  # fmt: skip
    assert [(r["row"], r["seed"]) for r in report["runs"]] == [
        ("GDNN (msc, NI)", 0), ("GDNN (msc, NI)", 1), ("CVAE (msc, NI)", 0), ("CVAE (msc, NI)", 1)
    ]  # fmt: skip
    for run in report["runs"]:
        assert run["config"]["data"]["noise"] == 0.4 and run["config"]["train"]["max_steps"] == 2
        assert 0 <= run["val"]["pixel_accuracy"] <= 100 and run["val"]["nll"] > 0
        assert {"iou_hair", "iou_skin", "iou_background"} <= set(run["val"])
    table4 = report["partial_observation"]["unet"]
    assert table4["cvae_row"] == "CVAE (msc, NI)" and len(table4["cvae"]) == 9
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == report["runs"]
    markdown = out.with_suffix(".md").read_text()
    assert "| unet | CVAE (msc, NI) | `configs/lfw_unet_cvae.yaml` | 2 |" in markdown
    assert " ± " in markdown  # two seeds: a standard error
    # the markdown can be rebuilt from the JSON alone
    out.with_suffix(".md").unlink()
    segmentation_benchmark.main(["--render", str(out.with_suffix(".json"))])
    assert out.with_suffix(".md").read_text() == markdown


def test_segmentation_report_renders_from_its_json(tmp_path):
    """The markdown is a function of the JSON alone (fast; the slow test above runs it all)."""
    val = {"pixel_accuracy": 90.0, "class_accuracy": 80.0, "mean_iou": 70.0,
           "foreground_iou": 60.0, "nll": 100.0}  # fmt: skip
    runs = [
        {"backbone": "unet", "row": "CVAE (msc, NI)", "seed": seed, "objective": "cvae",
         "config": {"train": {"max_steps": 2}}, "seconds": 60.0,
         "val": {key: value + seed for key, value in val.items()}}
        for seed in (0, 1)
    ]  # fmt: skip
    report = {"command": "python benchmarks/segmentation.py", "date": "2026-12-02",
              "hardware": "cpu", "budget": "cpu", "likelihood_samples": 10, "seconds": 120.0,
              "runs": runs, "partial_observation": {}}  # fmt: skip
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    segmentation_benchmark.main(["--render", str(path)])
    markdown = path.with_suffix(".md").read_text()
    row = "| unet | CVAE (msc, NI) | `configs/lfw_unet_cvae.yaml` | 2 | 1 | 90.50 ± 0.50 |"
    assert row in markdown and "S = 10" in markdown
