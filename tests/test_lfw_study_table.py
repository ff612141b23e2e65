"""benchmarks/lfw_study.py --stage table / score: Table 2's rows trained with one recipe,
scored on the test split once, choices made on validation only.

Tiny networks (tu-test_resnet at 64 px, 4 steps) on LFW and CUB trees in the official
layouts, trained in child processes like the real study.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import lfw_study
import lfw_study_report
import lfw_study_table
import numpy as np
import pytest
import torch
import yaml
from helpers.layouts import write_cub
from lfw_study_table import FIGURE_ROWS
from test_lfw_study import TINY, _write_lfw

TABLE_ROWS = ["CNN (msc, NI)", "CVAE (msc, NI)", "GDNN (msc)", "SSN (NI)", "CVAE recipe (msc, NI)"]


def _stage(stage: str, data: Path, runs: Path, *extra: str) -> int:
    argv = ["--stage", stage, "--data-root", str(data), "--runs", str(runs), "--no-worktree"]
    return lfw_study.main([*argv, *[f"--set={o}" for o in TINY], *extra])


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Three rows trained (seed 0) and scored: (data, runs, summary)."""
    data = _write_lfw(tmp_path_factory.mktemp("data") / "lfw")
    runs = tmp_path_factory.mktemp("runs")
    assert _stage("table", data, runs, "--rows", *TABLE_ROWS, "--samples", "3") == 0
    summary_path = runs / "summary.json"
    assert _stage("score", data, runs, "--summary", str(summary_path), "--samples", "3") == 0
    return data, runs, json.loads(summary_path.read_text())


def _phase_config(runs: Path, row: str, seed: int = 0) -> dict:
    run = runs / "table" / lfw_study_table.slug(row) / f"seed{seed}"
    return yaml.safe_load((run / "lfw128_cpu_r18_b16" / "config.yaml").read_text())


def test_each_row_trains_with_its_objective_losses_and_noise(table) -> None:
    _, runs, _ = table
    cnn, cvae, gdnn, ssn, recipe = (_phase_config(runs, row) for row in TABLE_ROWS)
    assert (cnn["model"]["objective"], cnn["data"]["noise"]) == ("cnn", 0.4)
    assert cvae["model"]["objective"] == "cvae" and cvae["model"]["scale_weights"] == [1, 1, 1]
    assert (gdnn["model"]["objective"], gdnn["data"]["noise"]) == ("gdnn", 0.0)
    assert (ssn["model"]["head"], ssn["data"]["noise"]) == ("ssn", 0.4)
    # our known-truth recipe: CIWAE (k = 50, ELBO share 0.2), mixture prior, KL warm-up
    assert (recipe["model"]["objective"], recipe["data"]["noise"]) == ("cvae", 0.4)
    assert recipe["model"]["importance_samples"] == 50 and recipe["model"]["elbo_share"] == 0.2
    assert recipe["model"]["prior_components"] == 16 and recipe["train"]["kl_warmup_steps"] == 200
    assert not (runs / "table" / "CVAE_recipe_msc_NI" / "seed0" / "partial.json").exists()
    assert cnn["train"]["max_steps"] == 4  # the recipe's config with the --set overrides


def test_score_records_every_run_on_the_test_split(table) -> None:
    _, _, summary = table
    records = {r["model"]: r for r in summary["records"]}
    assert sorted(records) == sorted(TABLE_ROWS) and not summary["unfinished"]
    for record in records.values():
        assert record["split"] == "test" and record["seed"] == 0 and record["size"] == 64
        assert record["updates"] == 4 and record["cpu_hours"] > 0
        assert set(record["iou"]) == {"background", "hair", "skin"}
        assert 0 <= record["pixel_accuracy"] <= 100 and record["nll"] > 0
        assert 0 <= record["ece"] <= 1 and record["ece_samples"] == 16
    assert records["CVAE (msc, NI)"]["nll_estimator"] == "importance"
    assert records["CVAE (msc, NI)"]["nll_samples"] == 3
    assert records["CNN (msc, NI)"]["nll_estimator"] == "exact"
    assert records["GDNN (msc)"]["noise"] is False and records["CNN (msc, NI)"]["noise"] is True
    assert records["SSN (NI)"]["head"] == "ssn" and records["SSN (NI)"]["multiscale"] is False
    assert records["CVAE recipe (msc, NI)"]["nll_estimator"] == "importance"
    cnn = summary["models"]["CNN (msc, NI)"]
    assert cnn["seeds"] == [0] and cnn["pixel_accuracy"]["stderr"] is None
    ratio = summary["goals"]["cvae_nll_over_cnn_NI"]["ratio"]
    assert ratio == pytest.approx(
        records["CVAE (msc, NI)"]["nll"] / records["CNN (msc, NI)"]["nll"]
    )


def test_seed_0_runs_score_their_samples_against_the_one_annotation(table) -> None:
    _, runs, summary = table
    sampled = summary["sample_scores"]
    assert sorted(sampled) == sorted(TABLE_ROWS)
    for row, scores in sampled.items():
        kept = json.loads(
            (runs / "table" / lfw_study_table.slug(row) / "seed0" / "samples.json").read_text()
        )
        assert scores == kept and scores["split"] == "test" and scores["annotators"] == 1
        assert scores["samples"] == 16 and 0 <= scores["hm_iou_16"] <= 1 and scores["ged_16"] >= 0
        assert -1 <= scores["ncc"] <= 1
    # a deterministic model's 16 samples are one map: its GED is twice its distance to the
    # annotation, 1 - HM-IoU, with no diversity to subtract
    cnn = sampled["CNN (msc, NI)"]
    assert cnn["ged_16"] == pytest.approx(2 * (1 - cnn["hm_iou_16"]), abs=1e-9)
    cvae = sampled["CVAE (msc, NI)"]
    assert cvae["ged_16"] < 2 * (1 - cvae["hm_iou_16"])  # its samples differ


def test_a_samples_file_without_the_ncc_is_made_again_with_the_same_scores(table) -> None:
    data, runs, summary = table
    run_dir = runs / "table" / lfw_study_table.slug("SSN (NI)") / "seed0"
    path = run_dir / "samples.json"
    older = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("ncc")}
    path.write_text(json.dumps(older))
    args = lfw_study._parser().parse_args(
        ["--stage", "score", "--data-root", str(data), "--runs", str(runs), "--no-worktree"]
    )
    again = lfw_study_table.samples_run(run_dir, 0, args)
    assert again["ncc"] == summary["sample_scores"]["SSN (NI)"]["ncc"]
    assert again["ged_16"] == older["ged_16"] and again["hm_iou_16"] == older["hm_iou_16"]
    assert "| NCC, S = 16 |" in lfw_study_report.summary_markdown(summary)


def test_a_row_whose_seed_0_lost_its_checkpoint_takes_the_ncc_of_another_seed(
    table, tmp_path
) -> None:
    data, runs, summary = table
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    row_dir = copy / "table" / lfw_study_table.slug("SSN (NI)")
    shutil.copytree(row_dir / "seed0", row_dir / "seed1")  # a second seed with its checkpoint
    lfw_study_table._best_checkpoint(row_dir / "seed0").unlink()  # restored: no checkpoint
    scores = dict(summary["sample_scores"]["SSN (NI)"])
    del scores["ncc"], scores["ncc_stderr"]
    args = lfw_study._parser().parse_args(
        ["--stage", "score", "--data-root", str(data), "--runs", str(copy), "--no-worktree"]
    )
    # a run of any seed scores its samples when it finishes, while its checkpoint is here
    (row_dir / "seed1" / "samples.json").unlink()
    lfw_study_table.finish_run(copy, f"table/{row_dir.name}/seed1", args)
    assert "ncc" in json.loads((row_dir / "seed1" / "samples.json").read_text())
    lfw_study_table._ncc_from_another_seed(copy, "SSN (NI)", scores, args)
    seed1 = json.loads((row_dir / "seed1" / "samples.json").read_text())
    assert scores["ncc_seed"] == 1 and scores["ncc"] == seed1["ncc"]
    table = lfw_study_report._sample_score_lines({"SSN (NI)": scores})
    assert any("| SSN (NI) |" in line and "(seed 1)" in line for line in table)
    # once seed 1's checkpoint is gone too, its kept samples.json still gives the NCC
    lfw_study_table._best_checkpoint(row_dir / "seed1").unlink()
    again = {k: v for k, v in scores.items() if not k.startswith("ncc")}
    lfw_study_table._ncc_from_another_seed(copy, "SSN (NI)", again, args)
    assert again == scores
    (row_dir / "seed1" / "samples.json").unlink()  # and with neither, no NCC is made up
    none = {k: v for k, v in scores.items() if not k.startswith("ncc")}
    lfw_study_table._ncc_from_another_seed(copy, "SSN (NI)", none, args)
    assert "ncc" not in none


def test_table4_compares_the_validation_best_cvae_and_gdnn_on_test(table) -> None:
    _, runs, summary = table
    table4 = summary["table4"]
    assert table4["split"] == "test"
    assert table4["rows"] == {"cvae": "CVAE (msc, NI)", "gdnn": "GDNN (msc)"}
    assert len(table4["cvae"]) == len(table4["gdnn"]) == 9
    assert "iterative" in table4["cvae"][0] and "iterative" not in table4["gdnn"][0]
    choices = json.loads((runs / "choices.json").read_text())
    assert "validation" in choices["table4_cvae"]["by"]


def test_the_test_split_is_scored_once(table, tmp_path: Path) -> None:
    data, runs, _ = table
    test_files = sorted((runs / "table").glob("*/seed0/test.json"))
    stamps = [path.stat().st_mtime_ns for path in [*test_files, runs / "table4.json"]]
    assert _stage("score", data, runs, "--summary", str(tmp_path / "again.json")) == 0
    assert [p.stat().st_mtime_ns for p in [*test_files, runs / "table4.json"]] == stamps
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["records"] == table[2]["records"]


def _finished(runs: Path, row: str, accuracy: float, seed: int = 0) -> None:
    """A finished table run whose last three validations average ``accuracy``."""
    run = runs / "table" / lfw_study_table.slug(row) / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    lines = [",".join(lfw_study.CURVE_FIELDS)]
    for k, value in enumerate([accuracy + 2.0, accuracy - 0.5, accuracy, accuracy + 0.5]):
        lines.append(f"{100 * (k + 1)},lfw128_cpu_r18_b16,128,{k},{k},{value},90,80,85")
    (run / "curve.csv").write_text("\n".join(lines) + "\n")
    (run / "done.json").write_text(json.dumps({"best_pixel_accuracy": accuracy + 2.0,
                                               "recipe": "r18_b16"}))  # fmt: skip


def test_best_stochastic_is_chosen_on_validation_and_kept(tmp_path: Path) -> None:
    stochastic = lfw_study_table._rows_of(lfw_study_table.STOCHASTIC_OBJECTIVES)
    assert len(stochastic) == 6 and not any(row.startswith(("CNN", "GDNN")) for row in stochastic)
    args = lfw_study._parser().parse_args(
        ["--runs", str(tmp_path), "--rows", "best-stochastic", "--seeds", "1", "2"]
    )
    for row in stochastic[:-1]:
        _finished(tmp_path, row, 90.0)
    with pytest.raises(lfw_study.StudyError, match="needs every one finished"):
        lfw_study_table.table_runs(args)
    _finished(tmp_path, stochastic[-1], 91.0)
    runs = lfw_study_table.table_runs(args)
    slug = lfw_study_table.slug(stochastic[-1])
    assert [run.name for run in runs] == [f"table/{slug}/seed1", f"table/{slug}/seed2"]
    assert "train.seed=2" in runs[1].overrides and "model.objective=hybrid" in runs[1].overrides
    # the choice stands even if a later run would change the ranking
    _finished(tmp_path, stochastic[0], 99.0)
    assert lfw_study_table.table_runs(args) == runs


def test_the_choice_takes_the_last_three_validations_not_the_best_one(tmp_path: Path) -> None:
    """A row with one lucky validation (its best) loses to a row that ends higher."""
    rows = ["CVAE (msc, NI)", "hybrid (msc, NI)"]
    _finished(tmp_path, rows[0], 94.0)  # best single validation 96.0, last three 94.0
    _finished(tmp_path, rows[1], 94.6)  # best single validation 96.6, last three 94.6
    run = tmp_path / "table" / lfw_study_table.slug(rows[0]) / "seed0"
    curve = (run / "curve.csv").read_text().replace(",96.0,", ",99.0,")
    (run / "curve.csv").write_text(curve)
    assert lfw_study_table.choose(tmp_path, "test", rows) == rows[1]


def test_a_table_keeps_its_recipe_and_its_runs_their_settings(tmp_path: Path) -> None:
    first = lfw_study._parser().parse_args(["--runs", str(tmp_path), "--recipe", "r18_b16",
                                            "--rows", "CNN"])  # fmt: skip
    assert lfw_study_table.table_runs(first)[0].recipe == "r18_b16"
    other = lfw_study._parser().parse_args(["--runs", str(tmp_path), "--recipe",
                                            "r18_b16_cosine", "--rows", "CNN"])  # fmt: skip
    with pytest.raises(lfw_study.StudyError, match="this table's runs use r18_b16"):
        lfw_study_table.table_runs(other)
    auto = lfw_study._parser().parse_args(["--runs", str(tmp_path), "--recipe", "auto",
                                           "--rows", "CNN"])  # fmt: skip
    assert lfw_study_table.table_runs(auto)[0].recipe == "r18_b16"  # auto: the kept one
    run = lfw_study_table.table_runs(first)[0]
    run_dir = tmp_path / run.name
    record = lfw_study._open_record(run_dir, run, "abc", first)
    lfw_study._write_json(run_dir / "run.json", record)
    changed = lfw_study.Run(run.name, run.recipe, (*run.overrides, "train.lr=0.1"))
    with pytest.raises(lfw_study.StudyError, match="not resumed"):
        lfw_study._open_record(run_dir, changed, "abc", first)


def test_runs_planned_but_not_started_are_waited_for(tmp_path: Path) -> None:
    argv = ["--runs", str(tmp_path), "--recipe", "r18_b16", "--rows", "CNN", "GDNN (msc)"]
    args = lfw_study._parser().parse_args([*argv, "--seeds", "0", "1"])
    lfw_study_table.table_runs(args)
    _finished(tmp_path, "CNN", 90.0)  # one started and finished; three never started
    planned = lfw_study_table._runs_to_score(tmp_path)
    assert planned == [("CNN", 0), ("CNN", 1), ("GDNN (msc)", 0), ("GDNN (msc)", 1)]
    assert lfw_study_table.table4(tmp_path, args, make=False) is None  # not made early


def test_table4_waits_for_its_candidates_seed_0_runs_only(tmp_path: Path) -> None:
    rows = ["CNN (msc, NI)", "CVAE (msc, NI)", "hybrid (msc)", "GDNN (msc)"]
    argv = ["--runs", str(tmp_path), "--recipe", "r18_b16", "--rows", *rows]
    lfw_study_table.table_runs(lfw_study._parser().parse_args([*argv, "--seeds", "0"]))
    lfw_study_table.table_runs(lfw_study._parser().parse_args(
        ["--runs", str(tmp_path), "--rows", "CNN (msc, NI)", "hybrid (msc)", "--seeds", "1"]
    ))  # fmt: skip
    for row in ["CVAE (msc, NI)", "GDNN (msc)"]:
        _finished(tmp_path, row, 90.0)
    assert not lfw_study_table.table4_ready(tmp_path)  # hybrid (msc) seed 0 still training
    _finished(tmp_path, "hybrid (msc)", 91.0)
    # ready while CNN (msc, NI) seed 0 and both seed-1 runs have not even started
    assert lfw_study_table.table4_ready(tmp_path)
    # a candidate started outside the plan (its plan.json lost, say) is waited for too
    (tmp_path / "table" / "GDNN_msc_NI" / "seed0").mkdir(parents=True)
    assert not lfw_study_table.table4_ready(tmp_path)


def test_table4_needs_both_sides_in_the_plan(tmp_path: Path) -> None:
    argv = ["--runs", str(tmp_path), "--recipe", "r18_b16", "--rows", "CVAE (msc)"]
    lfw_study_table.table_runs(lfw_study._parser().parse_args([*argv, "--seeds", "0"]))
    _finished(tmp_path, "CVAE (msc)", 90.0)
    assert not lfw_study_table.table4_ready(tmp_path)  # no GDNN row asked for


def test_unknown_row_and_recipe_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "unused"
    assert _stage("table", data, tmp_path / "runs", "--rows", "CNN (msc, XX)") == 2
    assert _stage("table", data, tmp_path / "runs", "--recipe", "nope") == 2


@pytest.mark.slow
def test_the_same_command_runs_cub(tmp_path: Path) -> None:
    data = write_cub(tmp_path / "data", count=12)
    runs = tmp_path / "runs"
    assert _stage("table", data, runs, "--dataset", "cub", "--rows", "CNN (msc, NI)") == 0
    summary = tmp_path / "cub.json"
    assert _stage("score", data, runs, "--summary", str(summary), "--samples", "2") == 0
    (record,) = json.loads(summary.read_text())["records"]
    assert record["dataset"] == "cub" and set(record["iou"]) == {"background", "bird"}
    assert record["split"] == "test"


def _recipe_run(runs: Path, recipe: str, accuracies: list[float], cpu_s: float) -> None:
    """A finished recipe run whose curve has these validation accuracies (final phase)."""
    run = runs / recipe
    run.mkdir(parents=True)
    phase = lfw_study.RECIPES[recipe][-1]
    lines = [",".join(lfw_study.CURVE_FIELDS)]
    for k, accuracy in enumerate(accuracies, start=1):
        cpu = cpu_s * k / len(accuracies)
        lines.append(f"{100 * k},{phase},128,{cpu},{cpu},{accuracy},90,80,85")
    (run / "curve.csv").write_text("\n".join(lines) + "\n")
    (run / "done.json").write_text("{}")


def test_auto_recipe_applies_the_declared_rule_and_keeps_it(tmp_path: Path) -> None:
    recipes, table_runs = tmp_path / "recipes", tmp_path / "table"
    # r18_b16's best single validation is the highest, but its last three average lower
    _recipe_run(recipes, "r18_b16", [90.0, 96.0, 94.0, 94.0], 3600)
    _recipe_run(recipes, "r18_b16_cosine", [90.0, 95.0, 95.1, 95.2], 3600)
    _recipe_run(recipes, "narrow_b16", [90.0, 95.0, 95.2, 95.3], 5400)  # best mean, dearer
    args = ["--runs", str(table_runs), "--recipe", "auto", "--recipe-runs", str(recipes)]
    parsed = lfw_study._parser().parse_args([*args, "--rows", "CNN"])
    with pytest.raises(lfw_study.StudyError, match="every recipe finished"):
        lfw_study_table.table_runs(parsed)
    _recipe_run(recipes, "progressive", [80.0, 94.0, 94.5, 94.6], 1800)
    scores = lfw_study_table.recipe_scores(recipes)
    assert scores["narrow_b16"]["mean_last_pixel_accuracy"] == pytest.approx(
        (95.0 + 95.2 + 95.3) / 3
    )
    assert scores["progressive"]["cpu_hours"] == pytest.approx(0.5)
    # within 0.3 points of narrow_b16's 95.17 and cheaper: the cosine recipe (95.1)
    (run,) = lfw_study_table.table_runs(parsed)
    assert run.recipe == "r18_b16_cosine"
    finished = [{"status": "finished"}] * len(lfw_study.RECIPES)
    assert lfw_study_report._choice(recipes, finished)["recipe"] == "r18_b16_cosine"  # collect
    choice = json.loads((table_runs / "choices.json").read_text())["recipe"]
    assert choice["recipe"] == "r18_b16_cosine" and set(choice["scores"]) == set(lfw_study.RECIPES)
    # kept: a later change to the curves does not move the study to another recipe
    _recipe_run(recipes / "later", "r18_b16", [99.0] * 3, 60)
    later = lfw_study._parser().parse_args([*args[:5], str(recipes / "later"), "--rows", "CNN"])
    assert lfw_study_table.table_runs(later)[0].recipe == "r18_b16_cosine"


def test_the_goals_count_table_2_rows_not_the_peers() -> None:
    records = [_record("CNN (msc, NI)", 94.0), _record("SSN (NI)", 96.0),
               _record("CVAE recipe (msc, NI)", 96.0)]  # fmt: skip
    goals = lfw_study_table.goals(records)
    assert goals["best_pixel_accuracy"]["model"] == "CNN (msc, NI)"
    assert goals["best_pixel_accuracy"]["at_least_95"] is False


def _record(model: str, accuracy: float, seed: int = 0, iou: float = 80.0, val=None) -> dict:
    return {"model": model, "seed": seed, "pixel_accuracy": accuracy, "class_accuracy": 90.0,
            "mean_iou": iou, "iou": {"hair": 70.0}, "nll": 1.0, "ece": 0.01, "cpu_hours": 0.5,
            "val_pixel_accuracy": accuracy if val is None else val}  # fmt: skip


def test_a_run_trained_on_a_gpu_is_costed_apart_from_the_cpu_runs(tmp_path) -> None:
    on_gpu = tmp_path / "gpu"
    on_gpu.mkdir()
    calls = [{"wall_s": 90.0, "device": "NVIDIA H200"}, {"wall_s": 30.0, "device": "NVIDIA H200"}]
    (on_gpu / "run.json").write_text(json.dumps({"calls": calls}))
    assert lfw_study_table.training_device(on_gpu) == {
        "trained_on": "NVIDIA H200", "gpu_minutes": 2.0
    }  # fmt: skip
    assert lfw_study_table.training_device(tmp_path) == {}  # no run.json: the CPU protocol
    cpu = [_record("hybrid (msc, NI)", 95.0, seed) for seed in (0, 2)]
    gpu = {**_record("hybrid (msc, NI)", 95.0, 1), "cpu_hours": 0.02,
           **lfw_study_table.training_device(on_gpu)}  # fmt: skip
    entry = lfw_study_table.aggregate([*cpu, gpu])["hybrid (msc, NI)"]
    assert entry["cpu_hours"] == pytest.approx(0.5)  # the GPU run's CPU seconds left out
    assert entry["gpu"] == {"device": "NVIDIA H200", "seeds": [1], "minutes": 2.0}
    assert lfw_study_report._cost_cell(entry) == "0.50 CPU-h; 2.0 min on an NVIDIA H200 (seed 1)"
    only_gpu = lfw_study_table.aggregate([gpu])["hybrid (msc, NI)"]
    assert only_gpu["cpu_hours"] is None
    assert lfw_study_report._cost_cell(only_gpu) == "2.0 min on an NVIDIA H200 (seed 1)"


def test_the_best_model_is_chosen_on_validation_not_on_test() -> None:
    records = [_record("CNN (msc, NI)", 95.4, val=94.0), _record("GDNN (msc)", 94.8, val=94.5)]
    best = lfw_study_table.goals(records)["best_pixel_accuracy"]
    assert best["model"] == "GDNN (msc)" and best["value"] == 94.8
    assert best["at_least_95"] is False  # though another row's test score passes 95


def test_a_one_seed_row_is_judged_with_the_pooled_seed_spread() -> None:
    cnn = [_record("CNN (msc, NI)", 95.0, seed, iou) for seed, iou in enumerate([85.0, 85.2, 84.8])]
    cvae = [
        _record("CVAE (msc, NI)", 95.0, seed, iou) for seed, iou in enumerate([86.0, 86.4, 86.2])
    ]
    gsnn = [_record("GSNN (msc, NI)", 95.0, 0, 85.3)]
    goal = lfw_study_table.goals([*cnn, *cvae, *gsnn])["GSNN (msc, NI) mean IoU over CNN (msc, NI)"]
    spread = (((0.0 + 0.04 + 0.04) + (0.04 + 0.04 + 0.0)) / 4) ** 0.5  # pooled over CNN, CVAE
    assert goal["seeds"] == [3, 1] and goal["gap"] == pytest.approx(0.3)
    assert goal["stderr"] == pytest.approx(spread * (1 / 3 + 1) ** 0.5)
    assert goal["stderr"] == pytest.approx(0.2309, abs=1e-4)  # 0.2 x sqrt(1/3 + 1)
    assert goal["ahead_by_more_than_a_stderr"] is True


def test_the_markdown_puts_the_peers_apart_and_says_the_goals_in_words(table) -> None:
    _, runs, summary = table
    text = (runs / "summary.md").read_text()
    ours, peers = text.split("Our CVAE recipe and the peers (issue 20)")
    assert "| CVAE (msc, NI) |" in ours and "| SSN (NI) |" not in ours
    assert "| SSN (NI) |" in peers.split("Test split")[0]
    assert "| CVAE recipe (msc, NI) |" in peers.split("Test split")[0]
    assert "IoU hair (%)" in ours and "IoU skin (%)" in ours
    best = summary["goals"]["best_pixel_accuracy"]
    assert (
        f"- The row best on validation, {best['model']} (1 seed(s)): test pixel accuracy "
        f"{best['value']:.2f}%" in text
    )
    assert "-CLL of CVAE (msc, NI) over CNN (msc, NI)'s:" in text
    assert (
        "Samples against the one annotation" in text
        and "| SSN (NI) | " in text.split("Samples against the one annotation")[1]
    )


def test_the_figure_draws_every_finished_row_on_the_same_images_and_names_the_rest(
    table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20's picture of every model on the same inputs: by default the rows trained
    like the peers (msc, NI), an objective's (msc) row where only that one has a checkpoint,
    our recipe's and the peers'; rows not trained are named."""
    from PIL import Image

    data, runs, _ = table
    figure = tmp_path / "models.png"
    assert _stage("figure", data, runs, "--figure", str(figure)) == 0
    drawn = ["CNN (msc, NI)", "GDNN (msc)", "CVAE (msc, NI)", "CVAE recipe (msc, NI)", "SSN (NI)"]
    printed = capsys.readouterr().out
    assert f"drew {len(drawn)} models" in printed
    left_out = printed.split("left out")[1]
    assert "GSNN (msc, NI)" in left_out and "ensemble (NI)" in left_out
    assert not any(row in left_out for row in [*drawn, "GDNN (msc, NI)"])
    tile = 64 + 2  # TINY's images, framed
    assert Image.open(figure).height == (1 + len(drawn)) * tile + 16  # inputs, names, rows
    assert _stage("figure", data, runs, "--figure", str(figure), "--rows", "GDNN (msc)") == 0
    assert Image.open(figure).height == 2 * tile + 16
    assert _stage("figure", data, runs, "--figure", str(figure), "--rows", "GSNN (msc)") == 2
    assert _stage("figure", data, runs, "--figure", str(figure), "--rows", "GSNN msc") == 2
    assert "unknown row 'GSNN msc'" in capsys.readouterr().err


def test_the_figure_draws_rows_whose_checkpoints_are_gone_from_their_kept_rows(
    table, tmp_path: Path
) -> None:
    """A study outlives its machines: each finished run keeps its rows of the picture, so
    the picture drawn after every checkpoint is gone is the one drawn before."""
    from PIL import Image

    data, runs, _ = table
    before, after = tmp_path / "before.png", tmp_path / "after.png"
    assert _stage("figure", data, runs, "--figure", str(before)) == 0
    moved = tmp_path / "runs"
    shutil.copytree(runs, moved)
    for checkpoint in moved.glob("table/**/*.pt"):
        checkpoint.unlink()
    kept = sorted(p.relative_to(moved) for p in moved.glob(f"table/*/seed0/{FIGURE_ROWS}"))
    assert len(kept) == len(TABLE_ROWS)  # made when each run finished
    assert _stage("figure", data, moved, "--figure", str(after)) == 0
    with Image.open(before) as first, Image.open(after) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))
    test = json.loads((moved / "table" / lfw_study_table.slug(TABLE_ROWS[0]) / "seed0" /
                       "test.json").read_text())  # fmt: skip
    diagram = test["reliability_diagram"]  # the ECE's bins, kept with the scores
    assert sum(diagram["counts"]) > 0 and len(diagram["edges"]) == len(diagram["counts"]) + 1


@pytest.mark.slow
def test_kept_runs_stand_in_for_a_lost_runs_folder(tmp_path: Path) -> None:
    """--keep: each run is scored when it finishes and its small files (never a checkpoint)
    kept; a new RUNS folder takes the kept runs as finished and scores to the same summary."""
    data, keep = _write_lfw(tmp_path / "data"), tmp_path / "keep"
    rows = ["CVAE (msc, NI)", "GDNN (msc)"]
    first, second = tmp_path / "first", tmp_path / "second"
    extra = ("--rows", *rows, "--samples", "3", "--keep", str(keep))
    assert _stage("table", data, first, *extra) == 0
    for row in rows:
        run = first / "table" / lfw_study_table.slug(row) / "seed0"
        assert (run / "test.json").is_file() and (run / "partial.json").is_file()
    cvae_run = first / "table" / lfw_study_table.slug(rows[0]) / "seed0"
    assert (cvae_run / lfw_study_table.SAMPLE_GRID).is_file()
    kept = {p.relative_to(keep).as_posix() for p in keep.rglob("*") if p.is_file()}
    assert not any(name.endswith(".pt") for name in kept)
    assert {"plan.json", "choices.json", "table/CVAE_msc_NI/seed0/test.json"} <= kept
    assert "table/CVAE_msc_NI/seed0/samples.json" in kept
    assert _stage("table", data, second, *extra) == 0  # restored: nothing trained
    assert not list(second.rglob("*.pt"))
    summaries = []
    for runs in (first, second):
        summary = runs / "summary.json"
        assert _stage("score", data, runs, "--summary", str(summary), "--keep", str(keep)) == 0
        summaries.append(json.loads(summary.read_text()))
    assert summaries[0]["records"] == summaries[1]["records"]
    assert summaries[0]["table4"]["cvae"] == summaries[1]["table4"]["cvae"]
    assert summaries[0]["sample_scores"] == summaries[1]["sample_scores"]
    assert summaries[1]["sample_scores"]["CVAE (msc, NI)"]["samples"] == 16


def test_no_choice_reads_a_test_score(tmp_path: Path) -> None:
    """The choices are made on validation: a run's test record cannot move them."""
    rows = ["CVAE (msc, NI)", "hybrid (msc, NI)"]
    _finished(tmp_path, rows[0], 95.0)
    _finished(tmp_path, rows[1], 94.0)
    run = tmp_path / "table" / lfw_study_table.slug(rows[1]) / "seed0"
    (run / "test.json").write_text(json.dumps({"pixel_accuracy": 99.9, "mean_iou": 99.9}))
    assert lfw_study_table.choose(tmp_path, "table4_cvae", rows) == rows[0]


def _kept_run(keep: Path, row: str, seed: int, overrides: list[str], recipe: str) -> None:
    run = keep / "table" / lfw_study_table.slug(row) / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"recipe": recipe, "overrides": overrides}))
    (run / "done.json").write_text(json.dumps({"recipe": recipe}))


def test_a_kept_run_of_another_table_is_refused_by_name(tmp_path: Path) -> None:
    """A CUB table (or another --set) given the LFW table's --keep folder is refused, not
    counted: the same row names, other settings."""
    keep = tmp_path / "keep"
    lfw = list(lfw_study_table.row_overrides("CNN", 0, "lfw"))
    _kept_run(keep, "CNN", 0, lfw, "r18_b16")
    argv = ["--runs", str(tmp_path / "runs"), "--recipe", "r18_b16", "--rows", "CNN",
            "--keep", str(keep)]  # fmt: skip
    cub = lfw_study._parser().parse_args([*argv, "--dataset", "cub"])
    with pytest.raises(lfw_study.StudyError, match=r"run\.json: kept with recipe r18_b16"):
        lfw_study_table.table_runs(cub)
    same = lfw_study._parser().parse_args(argv)
    lfw_study_table.table_runs(same)
    assert (tmp_path / "runs" / "table" / "CNN" / "seed0" / "done.json").is_file()


def test_kept_plans_are_merged_and_differing_choices_refused(tmp_path: Path) -> None:
    keep, runs = tmp_path / "keep", tmp_path / "runs"
    keep.mkdir()
    (keep / "plan.json").write_text(json.dumps({"runs": [["CNN", 0], ["CNN", 1]]}))
    (keep / "choices.json").write_text(json.dumps({"recipe": {"recipe": "r18_b16"}}))
    runs.mkdir()
    (runs / "plan.json").write_text(json.dumps({"runs": [["GDNN (msc)", 0], ["CNN", 0]]}))
    lfw_study_table.restore_table(keep, runs)
    planned = json.loads((runs / "plan.json").read_text())["runs"]
    assert planned == [["GDNN (msc)", 0], ["CNN", 0], ["CNN", 1]]
    (keep / "choices.json").write_text(json.dumps({"recipe": {"recipe": "narrow_b16"}}))
    with pytest.raises(lfw_study.StudyError, match="two tables in one"):
        lfw_study_table.restore_table(keep, runs)


@pytest.mark.parametrize("row", sorted(lfw_study_table.PEER_ROWS))
def test_every_peer_row_builds_its_head_with_its_papers_settings(row) -> None:
    """Each peer row's settings on the chosen recipe's configs give its head a valid model
    section (checked now, not when the row's turn comes sessions later), and the
    Probabilistic U-Net its paper's 6 latent dimensions, not the CVAE's 32."""
    from cvae_seg.config import load_config
    from cvae_seg.training.build import model_kwargs

    root = Path(__file__).resolve().parents[1]
    configs = lfw_study.RECIPES["r18_b16_cosine"]
    assert len(configs) == 1  # one phase: its config is the whole recipe
    config = load_config(
        root / "configs" / f"{configs[0]}.yaml",
        list(lfw_study_table.row_overrides(row, 0, "lfw")),
    )
    kwargs = model_kwargs(config, 3)
    assert kwargs["head"] == lfw_study_table.PEER_ROWS[row]
    if kwargs["head"] == "probunet":
        assert kwargs["latent_channels"] == 6


@pytest.mark.slow
def test_the_ensemble_trained_apart_joins_finished_member_runs_and_scores_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its members are runs of another row (seeds 1.. for its seed 0); --stage score joins
    them into one DeepEnsemble run, scored and kept like a trained one, restored without
    any checkpoint; it is refused as a run to train, naming the members to train."""
    import cvae_seg

    row = "ensemble (NI, apart)"
    monkeypatch.setitem(lfw_study_table.APART_ROWS, row, ("CNN (NI)", 2))
    data, keep = _write_lfw(tmp_path / "data"), tmp_path / "keep"
    runs, again = tmp_path / "runs", tmp_path / "again"
    assert _stage("table", data, runs, "--rows", row) == 2
    extra = ("--samples", "3", "--keep", str(keep))
    assert _stage("table", data, runs, "--rows", "CNN (NI)", "--seeds", "1", "2", *extra) == 0
    summary_path = runs / "summary.json"
    assert _stage("score", data, runs, "--summary", str(summary_path), *extra) == 0
    summary = json.loads(summary_path.read_text())
    records = {(r["model"], r["seed"]): r for r in summary["records"]}
    joined = records[(row, 0)]
    assert joined["head"] == "ensemble" and joined["nll_estimator"] == "exact"
    members = [records[("CNN (NI)", seed)] for seed in (1, 2)]
    assert joined["cpu_hours"] == pytest.approx(sum(m["cpu_hours"] for m in members), abs=2e-3)
    run_dir = runs / "table" / lfw_study_table.slug(row) / "seed0"
    done = json.loads((run_dir / "done.json").read_text())
    assert done["members"] == ["table/CNN_NI/seed1", "table/CNN_NI/seed2"]
    # its checkpoint is the members' backbones: the ensemble's prediction is theirs, averaged
    args = argparse.Namespace(device="cpu", data_root=str(data), cache_dir=None)
    model, *loaded = (
        lfw_study_table._test_config(lfw_study_table._best_checkpoint(folder), args)[0]
        for folder in [run_dir, *(runs / member for member in done["members"])]
    )
    x = torch.randn(1, 3, 64, 64)
    expected = torch.stack([m(x).softmax(1) for m in loaded]).mean(0)
    torch.testing.assert_close(model(x).exp(), expected)
    assert isinstance(model, cvae_seg.models.DeepEnsemble)
    assert (keep / "table" / lfw_study_table.slug(row) / "seed0" / "test.json").is_file()
    assert not list(keep.rglob("*.pt"))
    # a new runs folder takes the kept run as it is
    assert _stage("score", data, again, "--summary", str(again / "s.json"), *extra) == 0
    rescored = {(r["model"], r["seed"]): r for r in json.loads((again / "s.json").read_text())
                ["records"]}  # fmt: skip
    assert rescored[(row, 0)] == joined
