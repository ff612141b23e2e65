"""train, evaluate and visualize (the commands behind tools/*.py) and the demo, end to end on
generated data: what a trained work dir holds is what evaluation and pictures read."""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_DEMO as TINY

from cvae_seg.cli import run
from cvae_seg.training import load_checkpoint, load_trained

ROOT = Path(__file__).resolve().parents[1]


def _python_block(page: Path, naming: str) -> str:
    """The page's one ```python block that mentions ``naming``."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if naming in b]
    return block


def test_tools_train_evaluate_visualize(tmp_path, caplog):
    config = str(ROOT / "configs" / "demo.yaml")
    work_dir = tmp_path / "run"
    run(["train", config, *TINY, "train.max_steps=3", "--work-dir", str(work_dir), "--quiet"])
    checkpoint = work_dir / "last.pt"
    result = run(["evaluate", config, str(checkpoint), *TINY, "--partial", "--iterations", "1"])
    saved = json.loads((work_dir / "eval_val.json").read_text())
    assert (
        saved["pixel_accuracy"] == result["pixel_accuracy"]
        and saved["likelihood_method"] == "importance"
    )
    grid = [row for row in saved["partial_observation"]]
    # the trained size and normalisation win, and the user is told: the same scores
    other = ["data.size=48", "data.mean=[0.1,0.1,0.1]", "data.std=[0.9,0.9,0.9]"]
    with caplog.at_level("WARNING"):
        again = run(["evaluate", config, str(checkpoint), *TINY, *other])
    assert {k: again[k] for k in saved if k != "partial_observation"} == {
        k: v for k, v in saved.items() if k != "partial_observation"
    }
    assert "data.size=48 replaced by 32" in caplog.text
    assert "data.mean=(0.1, 0.1, 0.1) replaced by (0.5, 0.5, 0.5)" in caplog.text
    assert len(grid) == 9 and all("iterative" in row for row in grid)
    picture = run(
        ["visualize", config, str(checkpoint), *TINY, "--num-images", "2", "--num-samples", "3",
         "--occlude", "0.3"]
    )  # fmt: skip
    from PIL import Image

    width, height = Image.open(picture).size
    assert width == 2 * 7 * 34 and height > 2 * 2 * 34  # 7 tiles of 32+2 px, 2 rows, scale 2
    _, trained, classes = load_trained(checkpoint, torch.device("cpu"))
    # the exported best model evaluates like the best checkpoint
    best = run(["evaluate", config, str(work_dir / "best.pt"), *TINY, "--no-likelihood"])
    out = str(tmp_path / "p.json")
    shared = run(
        [
            "evaluate",
            config,
            str(work_dir / "pretrained"),
            *TINY,
            "--no-likelihood",
            "--out",
            out,
        ]
    )
    assert shared["pixel_accuracy"] == best["pixel_accuracy"]
    # docs/training.md's "Use a trained model in Python" runs as written on this run's folder
    snippet = _python_block(ROOT / "docs" / "training.md", "load_trained")
    scope = {"images": torch.randn(2, 3, 32, 32)}
    exec(compile(snippet.replace("work_dirs/demo", str(work_dir)), "training.md", "exec"), scope)
    assert scope["samples"].shape == (16, 2, 32, 32) and scope["classes"] == classes
    assert classes == ["background", "object"] and trained.model.objective == "cvae"
    # --resume without a path continues from the work dir's last.pt
    run(
        [
            "train",
            config,
            *TINY,
            "train.max_steps=4",
            "--work-dir",
            str(work_dir),
            "--resume",
            "--quiet",
        ]
    )
    assert load_checkpoint(checkpoint)["step"] == 4


def test_the_api_pages_train_and_evaluate_example_runs(tmp_path):
    snippet = _python_block(ROOT / "docs" / "api.md", "evaluate(model, loader")
    tiny = ", ".join(f'"{value}"' for value in [*TINY, "train.max_steps=2"])
    code = snippet.replace('"train.max_steps=20"', tiny).replace("work_dirs/try", str(tmp_path))
    scope: dict = {}
    exec(compile(code.replace("configs/demo.yaml", str(ROOT / "configs/demo.yaml")), "api.md",
                 "exec"), scope)  # fmt: skip
    assert scope["classes"] == ["background", "object"]
    assert 0 <= scope["scores"]["pixel_accuracy"] <= 100 and scope["scores"]["nll"] > 0


def test_demo_script_trains_and_draws(tmp_path):
    import run_demo

    picture = run_demo.main([*TINY, "--steps", "2", "--work-dir", str(tmp_path)])
    assert picture == tmp_path / "demo_samples.png" and picture.stat().st_size > 0


def test_evaluate_scores_samples_against_every_annotator(tmp_path):
    """With several annotations per image, evaluate adds the LIDC protocol (GED, HM-IoU)."""
    config = str(ROOT / "configs" / "known_truth.yaml")
    data = ["data.known_truth_annotators=3", "data.shapes_train=32", "data.shapes_val=8",
            "eval.num_samples=2", "eval.batch_size=8"]  # fmt: skip
    work_dir = tmp_path / "run"
    run(["train", config, *data, "train.max_steps=2", "train.eval_interval=2",
         "--work-dir", str(work_dir), "--quiet"])  # fmt: skip
    result = run(["evaluate", config, str(work_dir / "last.pt"), *data, "--no-likelihood"])
    assert result["annotators"] == 3
    for samples in (16, 100):
        assert result[f"ged_{samples}"] >= 0 and 0 <= result[f"hm_iou_{samples}"] <= 1


@pytest.mark.parametrize(
    ("head", "method"),
    [("probunet", "importance"), ("ssn", "monte_carlo"), ("mc_dropout", "monte_carlo"),
     ("ensemble", "exact")],
)  # fmt: skip
def test_every_peer_trains_evaluates_and_draws_through_the_tools(tmp_path, head, method):
    config = str(ROOT / "configs" / "demo.yaml")
    work_dir = tmp_path / "run"
    # the demo's latent_channels is the CVAE head's: back to the default, which no peer refuses
    overrides = [*TINY, f"model.head={head}", "model.latent_channels=32", "eval.num_samples=4",
                 "eval.calibration_samples=3"]  # fmt: skip
    run(["train", config, *overrides, "train.max_steps=2", "--work-dir", str(work_dir), "--quiet"])
    diagram_png = tmp_path / "reliability.png"
    result = run(["evaluate", config, str(work_dir / "pretrained"), *overrides,
                  "--reliability", str(diagram_png)])  # fmt: skip
    assert result["head"] == head and result["likelihood_method"] == method
    assert result["nll"] > 0 and 0 <= result["ece"] <= 1
    # the diagram's bins hold every labelled pixel of the split (8 images of 32 x 32)
    assert sum(result["reliability_diagram"]["counts"]) == 8 * 32 * 32
    from PIL import Image

    assert Image.open(diagram_png).size == (320, 320)
    picture = run(["visualize", config, str(work_dir / "best.pt"), *overrides,
                   "--num-images", "2", "--num-samples", "3"])  # fmt: skip
    assert Image.open(picture).size[0] == 2 * 7 * 34  # input, truth, prediction, 3, uncertainty
