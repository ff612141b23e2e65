"""benchmarks/lfw_study.py: runs finish once, resume bit for bit, refuse a commit change.

The runs train a tiny network (tu-test_resnet at 64 px, batch 2, 4 steps) on an LFW
Part Labels tree generated in the official layout, in child processes like the real study.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import lfw_study
import pytest
import torch
from helpers.layouts import write_lfw_images

TINY = [
    "model.encoder_name=tu-test_resnet",
    "data.size=64",
    "data.batch_size=2",
    "eval.batch_size=4",
    "train.max_steps=4",
    "train.eval_interval=2",
]


def _write_lfw(root: Path, people: int = 4, side: int = 24) -> Path:
    """An LFW Part Labels tree: random faces, hair on top, skin below, background around."""
    names = [f"Person_{chr(65 + k)}" for k in range(people)]
    write_lfw_images(root, names, side)
    (root / "parts_train.txt").write_text("".join(f"{n} {k}\n" for n in names for k in (1, 2)))
    (root / "parts_validation.txt").write_text("".join(f"{n} 0001\n" for n in names[:2]))
    (root / "parts_test.txt").write_text(f"{names[3]} 2\n")
    return root


@pytest.fixture(scope="module")
def lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_lfw(tmp_path_factory.mktemp("data") / "lfw")


def _study(lfw: Path, runs: Path, *extra: str, recipe: str = "r18_b16") -> int:
    argv = ["--data-root", str(lfw), "--runs", str(runs), "--recipes", recipe, "--no-worktree"]
    return lfw_study.main([*argv, *[f"--set={o}" for o in TINY], *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def finished(lfw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained in one call."""
    runs = tmp_path_factory.mktemp("runs")
    assert _study(lfw, runs) == 0
    return runs


def test_finished_run_is_skipped(finished: Path, lfw: Path) -> None:
    run = finished / "r18_b16"
    done = json.loads((run / "done.json").read_text())
    assert done["steps"] == 4 and done["commit"]
    curve = lfw_study.read_curve(run)
    assert [row["step"] for row in curve] == [2, 4]
    assert all(row["cpu_s"] > 0 and 0 <= row["pixel_accuracy"] <= 100 for row in curve)
    before = (run / "done.json").stat().st_mtime_ns
    assert _study(lfw, finished) == 0
    assert (run / "done.json").stat().st_mtime_ns == before
    record = json.loads((run / "run.json").read_text())
    assert len(record["calls"]) == 1 and record["calls"][0]["cpu_s"] > 0


def test_interrupted_run_resumes_to_the_same_weights(
    finished: Path, lfw: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    assert _study(lfw, runs, "--max-steps-per-call", "2") == 0
    run = runs / "r18_b16"
    assert not (run / "done.json").exists()
    assert [row["step"] for row in lfw_study.read_curve(run)] == [2]
    # a run is not resumed at another commit unless asked to
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "commit": "0" * 40}))
    assert _study(lfw, runs) == 1
    assert not (run / "done.json").exists()
    assert _study(lfw, runs, "--allow-commit-change") == 0
    assert json.loads((run / "done.json").read_text())["steps"] == 4
    curve = lfw_study.read_curve(run)
    assert [row["step"] for row in curve] == [2, 4] and curve[1]["cpu_s"] > curve[0]["cpu_s"]
    resumed = _weights(run / "lfw128_cpu_r18_b16" / "last.pt")
    straight = _weights(finished / "r18_b16" / "lfw128_cpu_r18_b16" / "last.pt")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_progressive_recipe_continues_from_its_first_phase(lfw: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    phase = "--set=lfw128_cpu_progressive:train.max_steps=6"
    assert _study(lfw, runs, phase, recipe="progressive") == 0
    curve = lfw_study.read_curve(runs / "progressive")
    assert [(row["step"], row["phase"]) for row in curve] == [
        (2, "lfw128_cpu_progressive_64px"),
        (4, "lfw128_cpu_progressive_64px"),
        (6, "lfw128_cpu_progressive"),
    ]


def test_collect_reports_curves_and_cpu(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "recipes.json"
    plot, curves = tmp_path / "curves.svg", tmp_path / "curves.csv"
    argv = ["--stage", "collect", "--runs", str(finished), "--out", str(out)]
    lfw_study.main([*argv, "--plot", str(plot), "--curves-csv", str(curves)])
    ElementTree.parse(plot)  # well-formed SVG
    assert len(curves.read_text().splitlines()) == 3
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert run["status"] == "finished" and run["step"] == 4 and len(run["curve"]) == 2
    assert run["cpu_s_spent"] > 0 and run["cpu_s_spent"] >= run["cpu_s_curve"]
    assert result["choice"] is None  # the rule chooses only among several finished recipes


def test_unknown_recipe_is_refused(lfw: Path, tmp_path: Path) -> None:
    assert _study(lfw, tmp_path / "runs", recipe="nope") == 2


def test_study_is_pinned_to_a_worktree_of_one_commit(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    parser = lfw_study._parser()
    head, parent = lfw_study._git("rev-parse", "HEAD"), lfw_study._git("rev-parse", "HEAD~1")
    made: list[Path] = []
    try:
        checkout, commit = lfw_study.pin_checkout(parser.parse_args(["--runs", str(runs)]))
        made.append(checkout)
        assert commit == head and lfw_study._git("rev-parse", "HEAD", cwd=checkout) == head
        assert (checkout / "benchmarks" / "lfw_study.py").is_file()
        assert json.loads((runs / "study.json").read_text())["commit"] == head
        # later calls keep the pinned commit; another one needs --allow-commit-change
        assert lfw_study.pin_checkout(parser.parse_args(["--runs", str(runs)])) == (checkout, head)
        moved = parser.parse_args(["--runs", str(runs), "--commit", parent])
        with pytest.raises(lfw_study.StudyError, match="allow-commit-change"):
            lfw_study.pin_checkout(moved)
        moved.allow_commit_change = True
        checkout, commit = lfw_study.pin_checkout(moved)
        made.append(checkout)
        assert (
            commit == parent and json.loads((runs / "study.json").read_text())["commit"] == parent
        )
    finally:
        for folder in made:
            lfw_study._git("worktree", "remove", "--force", str(folder))
