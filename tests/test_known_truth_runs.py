"""benchmarks/known_truth.py's runs: kept once finished, resumed after a stop to the same
weights, shared by processes running the same command, refused under other settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import known_truth as benchmark
import known_truth_figure
import known_truth_runs
import numpy as np
import pytest
import torch
import yaml
from helpers.stops import stop_at_training_step
from known_truth_ece_floor import task_floor
from PIL import Image

from cvae_seg.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# one cheap model, 4 updates with a checkpoint every 2 (monkeypatched below)
CNN = ["--budget", "ci", "--objectives", "cnn", "--steps", "4"]


def _run(work: Path, *extra: str) -> dict:
    return benchmark.main([*CNN, "--work-dir", str(work), "--out", str(work / "report"), *extra])


def _run_dir(work: Path, seed: int = 0) -> Path:
    return work / "ci_4steps" / "K2" / "cnn" / f"seed{seed}"


@pytest.fixture(autouse=True)
def _checkpoint_every_two_updates(monkeypatch):
    monkeypatch.setattr(benchmark, "CHECKPOINT_INTERVAL", 2)


def test_a_finished_run_is_kept_and_not_trained_again(tmp_path):
    first = _run(tmp_path)
    result = _run_dir(tmp_path) / "result.json"
    stamps = [result.stat().st_mtime_ns, (_run_dir(tmp_path) / "best.pt").stat().st_mtime_ns]
    again = _run(tmp_path)
    assert again["runs"] == first["runs"] and again["unfinished"] == []
    assert [result.stat().st_mtime_ns, (_run_dir(tmp_path) / "best.pt").stat().st_mtime_ns] == (
        stamps
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["runs"] == first["runs"] and saved["seconds"] == first["runs"][0]["seconds"]


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    straight = _run(tmp_path / "straight")
    with monkeypatch.context() as patch:  # stopped at update 3: last.pt is update 2
        stop_at_training_step(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "stopped")
    run_dir = _run_dir(tmp_path / "stopped")
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2
    assert not (run_dir / "result.json").exists()
    resumed = _run(tmp_path / "stopped")
    a = load_checkpoint(_run_dir(tmp_path / "straight") / "best.pt")["model"]
    b = load_checkpoint(run_dir / "best.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed["runs"][0]["test"] == straight["runs"][0]["test"]
    calls = json.loads((run_dir / "timing.json").read_text())["calls"]
    assert len(calls) == 2 and calls[0]["start"] <= calls[0]["end"] <= calls[1]["start"]
    assert resumed["runs"][0]["seconds"] == pytest.approx(
        sum(call["end"] - call["start"] for call in calls), abs=0.1
    )
    assert "trained" not in calls[0] and calls[1]["start"] < calls[1]["trained"] < calls[1]["end"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(benchmark.__file__).parent,
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert calls[0]["commit"].removesuffix("+dirty") == head  # each call's code is on record
    assert resumed["runs"][0]["commits"] == [calls[0]["commit"]]
    assert resumed["runs"][0]["train_seconds"] == pytest.approx(
        calls[0]["end"] - calls[0]["start"] + calls[1]["trained"] - calls[1]["start"], abs=0.1
    )
    minutes = resumed["runs"][0]["train_seconds"] / 60
    assert f"| {minutes:.1f} |" in (tmp_path / "stopped" / "report.md").read_text()


def test_a_run_another_process_holds_is_left_to_it(tmp_path):
    with known_truth_runs.claimed(_run_dir(tmp_path, 0)) as held:
        assert held is not None
        report = _run(tmp_path, "--seeds", "0", "1")
    assert [run["seed"] for run in report["runs"]] == [1]
    assert report["unfinished"] == ["K=2 cnn seed 0"]
    assert json.loads((tmp_path / "report.json").read_text())["unfinished"] == ["K=2 cnn seed 0"]
    report = _run(tmp_path, "--seeds", "0", "1")  # let go: this process takes it
    assert [run["seed"] for run in report["runs"]] == [0, 1] and report["unfinished"] == []


def test_a_run_made_with_other_settings_is_refused_by_name(tmp_path, capsys):
    _run(tmp_path)
    with pytest.raises(SystemExit):
        _run(tmp_path, "--extra", "train.lr=0.001")
    error = capsys.readouterr().err
    assert str(_run_dir(tmp_path)) in error and "train.lr" in error
    assert "--work-dir" in error


def test_a_run_that_goes_non_finite_is_kept_as_failed_and_the_next_goes_on(tmp_path, monkeypatch):
    original = known_truth_runs.train

    def diverging(config, *args, **kwargs):
        if config.train.seed == 0:
            raise FloatingPointError("step 3 (rank 0): the loss is nan")
        return original(config, *args, **kwargs)

    monkeypatch.setattr(known_truth_runs, "train", diverging)
    report = _run(tmp_path, "--seeds", "0", "1")
    assert [run["seed"] for run in report["runs"]] == [1] and report["unfinished"] == []
    assert report["failed"][0]["run"] == "K=2 cnn seed 0"
    assert "the loss is nan" in report["failed"][0]["error"]
    assert "Failed runs (left out of the means): K=2 cnn seed 0" in (
        (tmp_path / "report.md").read_text()
    )
    monkeypatch.setattr(known_truth_runs, "train", original)  # kept: not trained again
    assert _run(tmp_path, "--seeds", "0", "1")["failed"] == report["failed"]


def test_a_result_scored_another_way_is_refused_not_relabelled(tmp_path, capsys):
    _run(tmp_path)  # scored on the validation split
    with pytest.raises(SystemExit):
        _run(tmp_path, "--split", "test")
    error = capsys.readouterr().err
    assert "result.json was scored with" in error and "'split': 'val'" in error


def test_a_setting_added_since_at_its_default_is_no_other_setting(tmp_path, capsys):
    """A run made before a config key existed recorded no value for it: its default."""
    _run(tmp_path)
    recorded = _run_dir(tmp_path) / "config.yaml"
    config = yaml.safe_load(recorded.read_text())
    del config["train"]["grad_clip"]  # the command's value is the default (None): the same
    recorded.write_text(yaml.safe_dump(config))
    assert _run(tmp_path)["unfinished"] == []
    del config["train"]["checkpoint_interval"]  # the command sets 2, not the default
    recorded.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        _run(tmp_path)
    assert "train.checkpoint_interval differ" in capsys.readouterr().err


def test_kept_runs_stand_in_for_a_lost_work_dir_and_draw_the_same_figure(tmp_path):
    """--keep: a study that outlives its machine keeps each finished run's small files (no
    checkpoints); a new work dir takes them as finished, and the figure draws from them the
    picture the checkpoints draw (a sampling model: its rows depend on the random stream)."""
    kept = tmp_path / "kept"
    models = ("--objectives", "cnn", "gsnn")
    first = _run(tmp_path / "a", *models, "--keep", str(kept), "--figure", str(tmp_path / "a.png"))
    files = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    names = sorted(known_truth_runs.KEPT)
    assert files == [f"ci_4steps/K2/{model}/seed0/{name}" for model in models[1:] for name in names]
    again = _run(tmp_path / "b", *models, "--keep", str(kept), "--figure", str(tmp_path / "b.png"))
    assert again["runs"] == first["runs"] and again["unfinished"] == []
    assert not list((tmp_path / "b").rglob("best.pt"))  # restored, not trained
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_kept_runs_of_some_tasks_draw_before_the_others_finish(tmp_path):
    """Kept samples hold as many columns as the largest K of the whole run (8 here); drawn
    while only K = 2 is there, its section takes the first columns of that same draw."""
    kept = tmp_path / "kept"
    _run(tmp_path / "a", "--tasks", "2", "8", "--keep", str(kept))
    kept_dir = kept / "ci_4steps" / "K2" / "cnn" / "seed0"
    with np.load(kept_dir / "figure_samples.npz") as saved:
        assert saved["maps"].shape[0] == 8
    figure = tmp_path / "k2.png"
    drawn = benchmark.main(["--draw", str(kept), "--tasks", "2", "--figure", str(figure)])
    assert drawn["models"] == {2: ["cnn"]} and figure.is_file()
    entry = known_truth_figure.FigureModel("cnn", kept_dir / known_truth_figure.SAMPLES)
    _, maps = known_truth_figure._samples(entry, torch.device("cpu"), 2, 6, "val")
    assert maps.shape[:2] == (6, 2)  # the first 6 of the kept 8


def test_a_kept_run_replaces_a_partial_one_but_not_one_being_trained(tmp_path, monkeypatch):
    kept = tmp_path / "kept"
    _run(tmp_path / "a", "--keep", str(kept))
    with monkeypatch.context() as patch:  # a partial run of the same seed elsewhere
        stop_at_training_step(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "b")
    runs, names = tmp_path / "b" / "ci_4steps", ["K2/cnn/seed0"]
    with known_truth_runs.claimed(_run_dir(tmp_path / "b")) as held:
        assert held is not None and known_truth_runs.restore(kept / "ci_4steps", runs, names) == []
    assert known_truth_runs.restore(kept / "ci_4steps", runs, names) == [_run_dir(tmp_path / "b")]
    assert not (_run_dir(tmp_path / "b") / "last.pt").exists()
    assert known_truth_runs.finished(_run_dir(tmp_path / "b")) == (
        known_truth_runs.finished(_run_dir(tmp_path / "a"))
    )
    with pytest.raises(ValueError, match="not finished"):
        known_truth_runs.keep(tmp_path / "nothing", kept / "x")


def test_kept_runs_of_another_study_are_refused_before_anything_is_removed(tmp_path, monkeypatch,
                                                                          capsys):  # fmt: skip
    """A kept run made with other settings (another --extra) is refused by name, and the
    work dir's own partial run is left as it was."""
    kept = tmp_path / "kept"
    _run(tmp_path / "a", "--keep", str(kept))
    with monkeypatch.context() as patch:
        stop_at_training_step(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "b", "--extra", "train.lr=0.001")
    with pytest.raises(SystemExit):
        _run(tmp_path / "b", "--extra", "train.lr=0.001", "--keep", str(kept))
    error = capsys.readouterr().err
    assert str(kept / "ci_4steps" / "K2" / "cnn" / "seed0") in error and "train.lr" in error
    assert (_run_dir(tmp_path / "b") / "last.pt").is_file()


def test_a_failed_run_is_not_kept(tmp_path, monkeypatch):
    def diverging(config, *args, **kwargs):
        raise FloatingPointError("step 3 (rank 0): the loss is nan")

    monkeypatch.setattr(known_truth_runs, "train", diverging)
    report = _run(tmp_path / "a", "--keep", str(tmp_path / "kept"))
    assert report["failed"] and not list((tmp_path / "kept").rglob("result.json"))


def test_a_damaged_result_is_an_error_that_names_it(tmp_path, capsys):
    _run(tmp_path)
    result = _run_dir(tmp_path) / "result.json"
    result.write_text('{"k": 2, "objec')
    with pytest.raises(SystemExit):
        _run(tmp_path)
    assert f"{result}: not valid JSON" in capsys.readouterr().err


def test_rescore_scores_finished_runs_on_new_pairs_and_leaves_their_results(tmp_path, capsys):
    trained = _run(tmp_path, "--split", "test", "--seeds", "0", "1")
    results = [_run_dir(tmp_path, seed) / "result.json" for seed in (0, 1)]
    before = [path.read_bytes() for path in results]
    (_run_dir(tmp_path, 1) / "best.pt").unlink()  # kept files only: nothing to score
    args = ["--budget", "ci", "--rescore", str(tmp_path / "ci_4steps"), "--split", "test2",
            "--out", str(tmp_path / "again")]  # fmt: skip
    report = benchmark.main(args)
    assert [path.read_bytes() for path in results] == before
    assert report["split"] == "test2" and report["not_rescored"] == [
        "K=2 cnn seed 1 (no checkpoint)"
    ]
    (row,) = report["runs"]
    first = trained["runs"][0]
    assert row["seed"] == 0 and row["train_seconds"] == first["train_seconds"]
    assert row["scoring"]["split"] == "test2" and row["test"]["images"] == first["test"]["images"]
    assert row["test"]["true_nll"] != first["test"]["true_nll"]  # other pairs
    # the exact sampler's ECE beside it is the new pairs' too
    samples = benchmark.BUDGETS["ci"]["calibration_samples"]
    config = benchmark.load_config(_run_dir(tmp_path) / "config.yaml")
    assert report["ece_occluded_floor"] == {"2": task_floor(config, "test2", samples)}
    assert report["ece_occluded_floor"]["2"] != trained["ece_occluded_floor"]["2"]
    assert "Not rescored: K=2 cnn seed 1 (no checkpoint)." in (tmp_path / "again.md").read_text()
    # a second call takes the kept scores instead of scoring again
    kept = _run_dir(tmp_path) / "result_test2.json"
    stamp = kept.stat().st_mtime_ns
    assert benchmark.main(args)["runs"] == report["runs"] and kept.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit):
        benchmark.main(["--budget", "ci", "--rescore", str(tmp_path / "none"), "--out", "x"])
    assert "--rescore" in capsys.readouterr().err


def test_no_objectives_trains_only_the_recipes_and_other_heads(tmp_path):
    recipe = f"ciwae={ROOT / 'configs' / 'known_truth_ciwae.yaml'}"
    report = benchmark.main(["--budget", "ci", "--steps", "2", "--objectives", "--recipes", recipe,
                             "--tasks", "2", "--seeds", "0", "--work-dir", str(tmp_path),
                             "--out", str(tmp_path / "report")])  # fmt: skip
    assert [row["objective"] for row in report["runs"]] == ["ciwae"]
