"""The known-truth task: exact likelihood, generator properties, metrics, the benchmark."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_seg import metrics
from cvae_seg.config import load_config
from cvae_seg.data import load_split
from cvae_seg.data.known_truth import (
    HIDDEN_PARTS,
    conditional_entropy,
    default_mode_probs,
    held_out_layouts,
    known_truth_split,
    make_known_truth,
    true_log_likelihood,
)
from cvae_seg.evaluation import diagram_from_lists

ROOT = Path(__file__).resolve().parents[1]

import known_truth as benchmark  # noqa: E402
import known_truth_ece_floor  # noqa: E402
import known_truth_eval  # noqa: E402
import known_truth_reliability  # noqa: E402


def test_true_likelihood_matches_brute_force_on_every_3x3_map():
    # three candidates on a 3x3 image, two of them equal: their probabilities add up
    a = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)
    b = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=np.uint8)
    candidates = np.stack([a, b, a])[None]
    probs = np.array([0.5, 0.3, 0.2])
    every_map = np.array(list(itertools.product([0, 1], repeat=9)), dtype=np.uint8)
    every_map = every_map.reshape(-1, 3, 3)
    ll = true_log_likelihood(every_map, np.repeat(candidates, len(every_map), 0), probs)
    brute = np.array(
        [
            sum(p for p, c in zip(probs, candidates[0], strict=True) if (c == y).all())
            for y in every_map
        ]
    )
    assert np.isclose(np.exp(ll).sum(), 1.0)
    np.testing.assert_allclose(np.exp(ll), brute)
    assert np.isclose(ll[int("100110000", 2)], np.log(0.7))  # a: 0.5 + 0.2
    assert np.isneginf(ll).sum() == len(every_map) - 2
    # distinct candidates: the mean true NLL of draws tends to H
    assert math.isclose(
        conditional_entropy((0.7, 0.3)), -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    )


@pytest.mark.parametrize("k", [2, 4, 8])
def test_generator_labels_and_candidates(k):
    probs = default_mode_probs(k)
    truth = make_known_truth(400, 32, probs, seed=3)
    images, labels = truth.arrays.images, truth.arrays.labels
    assert truth.candidates.shape == (400, k, 32, 32)
    # each label is its drawn candidate, and the name records the mode
    picked = truth.candidates[np.arange(400), truth.modes]
    assert (picked == labels).all()
    assert all(
        name.endswith(f"mode{m}") for name, m in zip(truth.arrays.names, truth.modes, strict=True)
    )
    # the candidates agree off the occluder and all differ on it
    for i in range(0, 400, 37):
        for c in truth.candidates[i]:
            assert (c[~truth.hidden[i]] == labels[i][~truth.hidden[i]]).all()
        flat = truth.candidates[i].reshape(k, -1)
        assert len({row.tobytes() for row in flat}) == k
    # the image shows the occluder and the visible label; nothing else: the image is a
    # function of the visible part, whatever the mode
    visible_object = (labels == 1) & ~truth.hidden
    assert (images[truth.hidden] == 128).all()
    assert (images[~visible_object & ~truth.hidden] == 30).all()
    assert (images[visible_object] != 30).any(-1).all()
    # the true NLL of a pair is -log pi of its mode, and the frequencies approach pi
    nll = -true_log_likelihood(labels, truth.candidates, truth.probs)
    np.testing.assert_allclose(nll, -np.log(np.asarray(probs))[truth.modes])
    frequencies = np.bincount(truth.modes, minlength=k) / 400
    assert np.abs(frequencies - probs).max() < 0.08
    assert math.isclose(truth.entropy, conditional_entropy(probs))


def test_generator_is_seeded_and_validates():
    a, b = (
        make_known_truth(20, 32, (0.7, 0.3), seed=1),
        make_known_truth(20, 32, (0.7, 0.3), seed=1),
    )
    assert (a.arrays.images == b.arrays.images).all() and (a.modes == b.modes).all()
    assert len(HIDDEN_PARTS) == 8
    with pytest.raises(ValueError, match="sum to 1"):
        make_known_truth(2, 32, (0.5, 0.2))
    with pytest.raises(ValueError, match="multiple of 8"):
        make_known_truth(2, 36, (0.5, 0.5))
    with pytest.raises(ValueError, match="K in"):
        default_mode_probs(3)


def test_data_config_builds_the_known_truth_splits():
    config = load_config(
        None,
        [
            "data.dataset=known_truth",
            "data.size=32",
            "data.shapes_val=10",
            "data.known_truth_modes=[0.7,0.3]",
        ],
    )
    test = load_split(config.data, "test")
    direct = make_known_truth(10, 32, (0.7, 0.3), seed=2)
    assert (test.labels == direct.arrays.labels).all()
    assert test.classes == ("background", "object")


def test_known_truth_split_is_the_split_the_data_config_loads():
    overrides = [
        "data.dataset=known_truth",
        "data.size=32",
        "data.shapes_train=12",
        "data.shapes_val=10",
        "data.known_truth_modes=[0.7,0.3]",
        "data.split_seed=1",
    ]
    config = load_config(None, overrides)
    for split in ("train", "val", "test"):
        count = 12 if split == "train" else 10
        truth = known_truth_split(split, count, 32, (0.7, 0.3), split_seed=1)
        arrays = load_split(config.data, split)
        assert (arrays.labels == truth.arrays.labels).all()
        assert (arrays.images == truth.arrays.images).all()
    with pytest.raises(ValueError, match="split must be"):
        known_truth_split("dev", 2)


def test_the_second_test_split_is_new_pairs_under_the_test_splits_layout_rule():
    test = known_truth_split("test", 40, 32, (0.7, 0.3), holdout=0.5)
    second = known_truth_split("test2", 40, 32, (0.7, 0.3), holdout=0.5)
    train = known_truth_split("train", 40, 32, (0.7, 0.3), holdout=0.5)
    assert not (second.arrays.images == test.arrays.images).all(axis=(1, 2, 3)).any()
    # like the test split it draws the reserved layouts too, and marks them
    reserved = held_out_layouts(0.5)
    marked = {tuple(row) for row in second.layouts[second.held_out].tolist()}
    assert second.held_out.any() and marked <= reserved
    assert not {tuple(row) for row in second.layouts[~second.held_out].tolist()} & reserved
    assert not {tuple(row) for row in train.layouts.tolist()} & reserved
    with pytest.raises(ValueError, match="split must be"):
        load_split(load_config(None, ["data.dataset=known_truth"]).data, "test2")


def test_benchmark_ged_is_the_library_ged_with_weighted_candidates():
    """The GED column: `metrics.generalized_energy_distance` with the truth's weights, which
    includes the self-pairs of the samples (reports before 1.0 left them out)."""
    truth = make_known_truth(1, 32, (0.7, 0.3), seed=0)
    candidates = torch.from_numpy(truth.candidates[0]).long()
    samples = candidates[torch.tensor([0, 1, 0, 0, 1])]
    ged = metrics.generalized_energy_distance(
        samples[:, None], candidates[:, None], 2, reference_weights=torch.tensor([0.7, 0.3])
    )
    d = float(metrics.pairwise_iou_distance(candidates[:1, None], candidates[1:, None], 2))
    # E d(s, y) = (3 * 0.3 d + 2 * 0.7 d) / 5; E d(s, s') = 12 d / 25; E d(y, y') = 2 * 0.21 d
    expected = 2 * (0.9 + 1.4) / 5 * d - 12 / 25 * d - 0.42 * d
    assert float(ged) == pytest.approx(expected)
    # the convention before 1.0 took E d(s, s') over distinct pairs (12 d / 20): its value is
    # lower by that mean over S
    legacy = 2 * (0.9 + 1.4) / 5 * d - 12 / 20 * d - 0.42 * d
    assert float(ged) - legacy == pytest.approx(12 / 20 * d / 5)


class _Estimating:
    """A model's likelihood surface, nothing else: which estimator it declares."""

    def __init__(self, method: str, recognition: bool) -> None:
        self.likelihood_method = method
        self.recognition_net = object() if recognition else None


def test_the_declared_estimator_follows_the_recognition_net():
    """Monte Carlo is a secondary column only beside importance sampling; the headline is
    what the model declares (`likelihood_method`), whatever the numbers turn out to be."""
    assert known_truth_eval.declared_estimator(_Estimating("importance", True)) == "importance"
    assert known_truth_eval.estimators(_Estimating("importance", True)) == (
        "importance", "monte_carlo",
    )  # fmt: skip
    assert known_truth_eval.estimators(_Estimating("monte_carlo", False)) == ("monte_carlo",)
    assert known_truth_eval.estimators(_Estimating("exact", False)) == ("exact",)


@pytest.mark.slow
def test_headline_nll_is_the_estimator_declared_by_the_recognition_net():
    """Importance sampling for a model with a recognition net, Monte Carlo for other
    stochastic models, exact for deterministic ones, for every model the benchmark builds."""
    from cvae_seg.training.build import build_model

    expected = {"cnn": "exact", "gdnn": "exact", "gsnn": "monte_carlo", "cvae": "importance",
                "hybrid": "importance"}  # fmt: skip
    for objective, method in expected.items():
        config = load_config(
            ROOT / "configs" / "known_truth.yaml", [f"model.objective={objective}"]
        )
        model = build_model(config, 2)
        assert known_truth_eval.declared_estimator(model) == method
        assert (method == "importance") == (model.recognition_net is not None)
    for head, method in (("probunet", "importance"), ("ssn", "monte_carlo"),
                         ("mc_dropout", "monte_carlo"), ("ensemble", "exact")):  # fmt: skip
        model = build_model(load_config(ROOT / "configs" / f"known_truth_{head}.yaml"), 2)
        assert known_truth_eval.declared_estimator(model) == method


def test_legacy_reports_keep_the_lower_of_two_estimates():
    # reports before the declared estimator took the tighter bound: their merges still do
    collapsed = {"nll_importance": 1.48, "nll_monte_carlo": 1.44}
    assert benchmark.legacy_tightest_nll(collapsed, "cvae") == 1.44
    assert benchmark.legacy_tightest_nll({"nll_exact": 2.0, "nll_monte_carlo": 1.0}, "cnn") == 2.0


def test_a_hit_is_within_the_stated_distance():
    """2 px from a candidate is a hit at the default threshold; 3 px is a miss."""
    truth = make_known_truth(1, 32, (0.7, 0.3), seed=0)
    first = torch.from_numpy(truth.candidates[0, 0]).long()
    rows, cols = np.nonzero(truth.hidden[0])
    off_by = []
    for count in (0, 2, 3):
        sample = first.clone()
        for r, c in zip(rows[:count], cols[:count], strict=True):
            sample[r, c] = 1 - sample[r, c]
        off_by.append(sample)
    sampler = _ScriptedSampler(torch.stack(off_by))
    budget = {"mode_samples": 3, "mode_inputs": 1, "ged_samples": 3}
    x = torch.zeros(1, 3, 32, 32)
    stats = known_truth_eval._SampleStats(sampler, x, truth, budget, benchmark.HIT_DISTANCE)
    assert benchmark.HIT_DISTANCE == 2
    result = stats.summary(np.arange(1))
    assert result["frequencies"] == pytest.approx([2 / 3, 0, 1 / 3])  # the 3-px one missed
    loose = known_truth_eval._SampleStats(sampler, x, truth, budget, 3).summary(np.arange(1))
    assert loose["frequencies"] == pytest.approx([1, 0, 0])
    # the floor beside the TV is the perfect sampler's with the same number of samples
    assert result["tv_floor_mean"] == metrics.total_variation_floor(truth.probs, 3)
    assert result["tv_mean"] == pytest.approx(metrics.total_variation([2, 0, 1], truth.probs))


def test_peer_configs_share_the_task_with_the_cvae_config():
    """Every model of the benchmark trains on the same data, schedule and backbone."""
    cvae = load_config(ROOT / "configs" / "known_truth.yaml")
    for head in benchmark.PEERS:
        peer = load_config(ROOT / "configs" / f"known_truth_{head}.yaml")
        assert peer.model.head == head
        assert peer.data == cvae.data and peer.train == cvae.train and peer.eval == cvae.eval
        for key in ("arch", "encoder_name", "backbone_kwargs"):
            assert getattr(peer.model, key) == getattr(cvae.model, key)


def test_a_ci_run_writes_nothing_into_results(tmp_path):
    with pytest.raises(SystemExit):
        benchmark.main(["--budget", "ci", "--out", str(ROOT / "results" / "known_truth_ci")])
    with pytest.raises(SystemExit):  # a bad --holdout is a usage error, before any training
        benchmark.main(["--budget", "ci", "--holdout", "1.0", "--out", str(tmp_path / "x")])


@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "known_truth_ci"
    report = benchmark.main(
        [
            "--budget",
            "ci",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--figure",
            str(tmp_path / "samples.png"),
        ]
    )
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["runs"] == report["runs"]
    assert {r["objective"] for r in saved["runs"]} == set(benchmark.OBJECTIVES)
    for run in saved["runs"]:
        test = run["test"]
        assert test["true_nll"] > 0 and math.isfinite(test["ged"])
        assert 0 <= test["tv_mean"] <= 1 and math.isclose(sum(test["frequencies"]), 1.0)
        assert ("nll_importance" in test) == (run["objective"] in ("cvae", "hybrid"))
        # the headline is the declared estimator's, not the lower of two
        assert test["nll"] == test[f"nll_{test['nll_estimator']}"]
        assert test["nll_ratio"] == pytest.approx(test["nll"] / test["true_nll"])
        assert test["tv_floor_mean"] > test["tv_floor_pooled"] > 0
        assert "held_out" not in test  # the validation split never shows held-out layouts
    assert saved["split"] == "val" and saved["hit_distance"] == benchmark.HIT_DISTANCE
    markdown = out.with_suffix(".md").read_text()
    assert "| 2 | cvae |" in markdown and "Command:" in markdown
    assert "Protocol: the val split" in markdown and "within 2 pixels" in markdown
    runs = next((tmp_path / "work").glob("ci*"))
    redrawn = tmp_path / "redrawn.png"
    # the form of two runs folders still draws; a folder given twice counts once
    drawn = benchmark.main(
        ["--budget", "ci", "--draw", str(runs), str(runs), "--figure", str(redrawn)]
    )
    assert drawn["models"] == {2: list(benchmark.OBJECTIVES)}  # every model, each once
    with Image.open(tmp_path / "samples.png") as grid, Image.open(redrawn) as again:
        assert np.array_equal(np.asarray(grid), np.asarray(again))  # drawn from the saved runs
    assert not list(tmp_path.glob(".*.tmp-*"))
    with pytest.raises(SystemExit):  # --draw without --figure is a usage error
        benchmark.main(["--budget", "ci", "--draw", str(runs), str(runs)])

    checkpoint = next((tmp_path / "work").glob("ci*/K2/cvae/seed0/best.pt"))
    diagnosis = benchmark.main(["--budget", "ci", "--diagnose", str(checkpoint)])
    per_mode = diagnosis["per_mode"]
    assert [m["pi"] for m in per_mode] == pytest.approx(list(benchmark.default_mode_probs(2)))
    assert sum(m["pairs"] for m in per_mode) == report["budget_settings"]["test"]
    for mode in per_mode:
        assert mode["pairs"] == 0 or math.isfinite(mode["nll_importance"])
    assert diagnosis["occluded_nll_at_q_mean"] >= 0 and diagnosis["visible_nll_at_q_mean"] >= 0
    assert sum(m["prior_mass"] for m in per_mode) == pytest.approx(1.0)
    assert all(0 <= m["monte_carlo_p"] <= 1 for m in per_mode)
    config = benchmark.load_config(checkpoint.parent / "config.yaml")
    bound_std = math.exp(config.model.logvar_bound / 2)
    assert len(diagnosis["prior_std_per_channel"]) == config.model.latent_channels
    assert all(0 < std < bound_std for std in diagnosis["prior_std_per_channel"])
    assert 0 <= diagnosis["prior_samples_in_between"] <= 1


def test_the_figure_draws_every_trained_model_on_the_same_inputs(tmp_path):
    """Issue 20, section 5: the sample grid has a labelled block per model the run trained
    (an objective, a peer head, a recipe), and --draw rebuilds it from the saved runs."""
    recipe = ROOT / "configs" / "known_truth_ciwae.yaml"
    work, figure, redrawn = tmp_path / "work", tmp_path / "samples.png", tmp_path / "again.png"
    benchmark.main([
        "--budget", "ci", "--objectives", "cnn", "--heads", "cvae", "ssn", "--recipes",
        f"ciwae={recipe}", "--work-dir", str(work), "--out", str(tmp_path / "report"),
        "--figure", str(figure),
    ])  # fmt: skip
    drawn = benchmark.main(["--budget", "ci", "--draw", str(work), "--figure", str(redrawn)])
    assert drawn["models"] == {2: ["cnn", "ssn", "ciwae"]}  # the table's order, then recipes
    with Image.open(figure) as grid, Image.open(redrawn) as again:
        assert np.array_equal(np.asarray(grid), np.asarray(again))
        height = grid.height
    # each model adds one block of the same height to its task's section
    models = benchmark.saved_models([work])[2]
    cpu = torch.device("cpu")
    heights = [benchmark.sample_figure({2: models[:n]}, cpu).height for n in (1, 2, 3)]
    assert heights[0] < heights[1] < heights[2] == height
    assert heights[2] - heights[1] == heights[1] - heights[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):  # a folder without saved runs is a usage error
        benchmark.main(["--budget", "ci", "--draw", str(tmp_path / "empty"), "--figure", "x.png"])


def test_the_reliability_figure_is_drawn_from_the_kept_diagrams(tmp_path):
    """Issue 20, section 1: each run keeps its occluded pixels' reliability diagram, and
    --reliability draws a panel per model from the kept result.json files alone."""
    work, picture = tmp_path / "work", tmp_path / "reliability.png"
    benchmark.main([
        "--budget", "ci", "--objectives", "cnn", "cvae", "--heads", "cvae", "--work-dir",
        str(work), "--out", str(tmp_path / "report"), "--reliability", str(picture),
    ])  # fmt: skip
    runs = next(work.glob("ci*"))
    for model in ("cnn", "cvae"):
        result = json.loads((runs / "K2" / model / "seed0" / "result.json").read_text())
        diagram = result["test"]["reliability_occluded"]
        truth, _, _ = benchmark.evaluation_set(load_config(runs / "K2" / model / "seed0" /
                                               "config.yaml"), "val")  # fmt: skip
        assert sum(diagram["counts"]) == truth.hidden.sum()  # every occluded pixel, once
        again = diagram_from_lists(diagram)
        filled = again.counts > 0
        gaps = (again.confidence - again.accuracy).abs()[filled]
        weights = again.counts[filled] / again.counts.sum()
        # the kept bins give back the ECE the report holds
        assert float((weights * gaps).sum()) == pytest.approx(result["test"]["ece_occluded"])
    redrawn = tmp_path / "again.png"
    drawn = benchmark.main(["--budget", "ci", "--draw", str(work), "--reliability", str(redrawn)])
    assert drawn["reliability_models"] == {2: ["cnn", "cvae"]} and "figure" not in drawn
    with Image.open(picture) as first, Image.open(redrawn) as again:
        assert np.array_equal(np.asarray(first), np.asarray(again))
        assert first.width == 2 * known_truth_reliability.PANEL
    models = benchmark.saved_models([work])
    many, _ = known_truth_reliability.reliability_figure({2: models[2] * 4})  # 8 panels
    panel, columns = known_truth_reliability.PANEL, known_truth_reliability.COLUMNS
    assert many.size == (columns * panel, first.height + panel)  # a second line, not wider
    for model in ("cnn", "cvae"):  # runs scored before the diagram was kept
        path = runs / "K2" / model / "seed0" / "result.json"
        result = json.loads(path.read_text())
        del result["test"]["reliability_occluded"]
        path.write_text(json.dumps(result))
    with pytest.raises(SystemExit):  # nothing to draw is a usage error, not a blank picture
        benchmark.main(["--budget", "ci", "--draw", str(work), "--reliability", str(redrawn)])
    with pytest.raises(SystemExit):  # --draw with nothing to draw
        benchmark.main(["--budget", "ci", "--draw", str(work)])


def test_the_occluded_ece_is_shown_beside_a_perfect_sampler_s(tmp_path):
    """Issue 20, section 5: the report's occluded-pixel ECE carries, per K, the floor that
    averaging as many exact samples leaves, the number known_truth_ece_floor.py writes for
    the same task; --merge keeps it."""
    outs = [tmp_path / f"seed{seed}" for seed in (0, 1)]
    for seed, out in enumerate(outs):
        report = benchmark.main(["--budget", "ci", "--objectives", "cnn", "--seeds", str(seed),
                                 "--work-dir", str(tmp_path), "--out", str(out)])  # fmt: skip
    floor = report["ece_occluded_floor"]["2"]
    config = next(tmp_path.glob("ci*/K2/cnn/seed0/config.yaml"))
    samples = benchmark.BUDGETS["ci"]["calibration_samples"]
    written = tmp_path / "floor.json"
    argv = [str(config), "--split", "val", "--samples", str(samples), "--repeats", "20",
            "--out", str(written)]  # fmt: skip
    assert known_truth_ece_floor.main(argv) == 0
    (task,) = json.loads(written.read_text())["tasks"]
    assert floor == pytest.approx(task["samples"][str(samples)]["mean"]) and 0 < floor < 1
    merged = tmp_path / "merged"
    benchmark.main(["--merge", *(str(o.with_suffix(".json")) for o in outs), "--out", str(merged)])
    for table in (outs[1].with_suffix(".md"), merged.with_suffix(".md")):
        lines = table.read_text().splitlines()
        (header,) = [i for i, line in enumerate(lines) if "occluded (perfect sampler)" in line]
        assert lines[header + 2].startswith("| 2 | cnn |")  # the ECE table's row
        assert lines[header + 2].endswith(f" ({floor:.3f}) |")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["known_truth_iw.yaml", "known_truth_ciwae.yaml"])
def test_benchmark_trains_from_the_given_config(tmp_path, name):
    config = Path(benchmark.ROOT) / "configs" / name
    args = ["--budget", "ci", "--objectives", "cvae", "--config", str(config)]
    benchmark.main([*args, "--work-dir", str(tmp_path), "--out", str(tmp_path / "iw")])
    run_config = load_config(next(tmp_path.glob("ci*/K2/cvae/seed0/config.yaml")))
    wanted = load_config(config).model
    assert run_config.model.importance_samples == wanted.importance_samples > 1
    assert run_config.model.elbo_share == wanted.elbo_share
    assert run_config.model.prior_components == wanted.prior_components
    assert run_config.train.kl_warmup_steps > 0


def test_merge_joins_seeds_run_as_separate_jobs(tmp_path):
    def report(seeds: list[int], importance: float, steps: int = 8) -> Path:
        test = {"nll_importance": importance, "nll_monte_carlo": 0.7, "true_nll": 0.5,
                "entropy": 0.61, "nll_ratio": importance / 0.5}  # fmt: skip
        runs = [{"k": 2, "objective": "cvae", "seed": s, "test": dict(test)} for s in seeds]
        path = tmp_path / f"seeds{seeds}_{steps}.json"
        path.write_text(json.dumps({
            "command": f"run {seeds}", "date": "2026-11-24", "hardware": "cpu", "torch": "2",
            "budget_settings": {**benchmark.BUDGETS["ci"], "steps": steps},
            "miss_fraction": benchmark.MISS_FRACTION, "tasks": [2], "seeds": seeds,
            "seconds": 60.0, "runs": runs,
        }))  # fmt: skip
        return path

    first, second = report([0], 0.8), report([1, 2], 0.6)
    merged = benchmark.main(["--merge", str(first), str(second), "--out", str(tmp_path / "all")])
    assert merged["seeds"] == [0, 1, 2] and merged["seconds"] == 120.0
    assert merged["command"] == "run [0]; run [1, 2]" and merged["date"] == "2026-11-24"
    # seed 0's ratio was written from its importance estimate; merging takes the tighter MC
    assert [r["test"]["nll_ratio"] for r in merged["runs"]] == pytest.approx([1.4, 1.2, 1.2])
    table = (tmp_path / "all.md").read_text()
    assert "| 2 | cvae |" in table and "2.0 minutes in all (summed over the merged jobs)" in table
    with pytest.raises(ValueError, match="already merged"):
        benchmark.merge_reports([first, first])
    with pytest.raises(ValueError, match="budget_settings"):
        benchmark.merge_reports([first, report([3], 0.6, steps=16)])
    # reports written before 1.0 carry no GED convention: their table says which they used,
    # and they merge only with each other
    assert "GED: D^2, sample pairs without self-pairs" in table
    current = report([4], 0.6)
    saved = json.loads(current.read_text())
    current.write_text(json.dumps({**saved, "ged_convention": benchmark.GED_CONVENTION}))
    with pytest.raises(ValueError, match="GED"):
        benchmark.merge_reports([first, current])
    alone = benchmark.main(["--merge", str(current), "--out", str(tmp_path / "current")])
    assert alone["ged_convention"] == benchmark.GED_CONVENTION
    assert (
        "GED: D^2, all ordered pairs, self-pairs included" in (tmp_path / "current.md").read_text()
    )


class _ScriptedSampler:
    """Draws exactly the given label maps (logits +-20), in turn: a perfectly sharp decoder."""

    def __init__(self, maps: torch.Tensor) -> None:
        self.maps = maps

    def sample(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        picks = self.maps[torch.arange(num_samples) % len(self.maps)]  # (S, H, W)
        one_hot = torch.nn.functional.one_hot(picks.long(), 2).permute(0, 3, 1, 2).float()
        return (40 * one_hot - 20)[:, None]  # (S, 1, 2, H, W)


def test_prior_decomposition_separates_mass_from_sharpness():
    a = np.zeros((4, 4), dtype=np.uint8)
    b = a.copy()
    b[1:3, 2:] = 1
    candidates = np.stack([a, b])[None]  # one input, K = 2
    hedge = torch.from_numpy(b).clone()
    hedge[1, 2] = 0  # one pixel off candidate b: explains b best, but p(b|z) ~ 0
    sharp = benchmark.prior_decomposition(
        _ScriptedSampler(torch.from_numpy(np.stack([a, a, a, b]))), torch.zeros(1, 3, 4, 4),
        candidates, 8,
    )  # fmt: skip
    assert sharp["mass"] == pytest.approx([0.75, 0.25])  # prior mass per shape
    assert sharp["sharpness"] == pytest.approx([1.0, 1.0])  # sharpness inside each region
    assert sharp["monte_carlo_p"] == pytest.approx([0.75, 0.25])  # Monte Carlo p(y_k|x)
    blurred = benchmark.prior_decomposition(
        _ScriptedSampler(torch.stack([torch.from_numpy(a), hedge])), torch.zeros(1, 3, 4, 4),
        candidates, 8,
    )  # fmt: skip
    assert blurred["mass"] == pytest.approx([0.5, 0.5])
    assert blurred["sharpness"][0] == pytest.approx(1.0) and blurred["sharpness"][1] < 1e-6
    assert blurred["monte_carlo_p"][1] < 1e-6
    assert sharp["in_between"] == 0 and blurred["in_between"] == pytest.approx(0.5)


@pytest.mark.slow
def test_mixture_config_reaches_the_objectives_with_a_kl_only(tmp_path):
    """cvae and hybrid get the mixture prior; the others, which could not train its weights,
    keep the Gaussian; --diagnose reports the mixture's weights."""
    config = Path(benchmark.ROOT) / "configs" / "known_truth_mixture.yaml"
    components = load_config(config).model.prior_components
    assert components > 1
    args = ["--budget", "ci", "--objectives", "gsnn", "hybrid", "--config", str(config)]
    benchmark.main([*args, "--work-dir", str(tmp_path), "--out", str(tmp_path / "mix")])
    for objective, expected in (("gsnn", 1), ("hybrid", components)):
        run_config = load_config(next(tmp_path.glob(f"ci*/K2/{objective}/seed0/config.yaml")))
        assert run_config.model.prior_components == expected
    checkpoint = next(tmp_path.glob("ci*/K2/hybrid/seed0/best.pt"))
    diagnosis = benchmark.main(["--budget", "ci", "--diagnose", str(checkpoint)])
    weights = diagnosis["prior_component_weights"]
    assert len(weights) == components and sum(weights) == pytest.approx(1.0, abs=0.01)
    assert weights == sorted(weights, reverse=True)
    assert len(diagnosis["prior_std_per_channel"]) == load_config(config).model.latent_channels


def test_merge_refuses_reports_of_another_protocol(tmp_path):
    def report(name: str, **protocol) -> Path:
        test = {"nll": 0.8, "nll_importance": 0.8, "nll_monte_carlo": 0.7, "true_nll": 0.5,
                "entropy": 0.61, "nll_ratio": 1.6, "nll_estimator": "importance"}  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({
            "command": name, "date": "2026-12-02", "hardware": "cpu", "torch": "2",
            "budget_settings": benchmark.BUDGETS["ci"], "tasks": [2], "seeds": [0],
            "seconds": 6.0, "split": "val", "holdout": 0.0, "annotators": 1,
            "hit_distance": 2, "nll_protocol": benchmark.NLL_PROTOCOL,
            "ged_convention": benchmark.GED_CONVENTION, **protocol,
            "runs": [{"k": 2, "objective": "cvae", "seed": int(name[-1]), "test": test}],
        }))  # fmt: skip
        return path

    merged = benchmark.merge_reports([report("a0"), report("b1")])
    # the declared estimator's ratio stays as written: no lower-of-two recomputation
    assert [r["test"]["nll_ratio"] for r in merged["runs"]] == [1.6, 1.6]
    for key, value in (("split", "test"), ("hit_distance", 4), ("holdout", 0.2)):
        with pytest.raises(ValueError, match="rerun one of them"):
            benchmark.merge_reports([report("a0"), report("c2", **{key: value})])


@pytest.mark.slow
def test_held_out_layouts_are_reported_apart_on_the_test_split(tmp_path):
    out = tmp_path / "held"
    args = ["--budget", "ci", "--objectives", "cvae", "--work-dir", str(tmp_path), "--out",
            str(out), "--split", "test", "--holdout", "0.5"]  # fmt: skip
    report = benchmark.main(args)
    test = report["runs"][0]["test"]
    assert report["split"] == "test" and report["holdout"] == 0.5
    held_out, seen = test["held_out"], test["seen"]
    assert held_out["images"] > 0 and seen["images"] > 0
    assert held_out["images"] + seen["images"] == test["images"] == 6
    # the split's held-out images are exactly those whose layout training never drew
    config = load_config(next(tmp_path.glob("ci*/K2/cvae/seed0/config.yaml")))
    truth, _, _ = known_truth_eval.evaluation_set(config, "test")
    assert int(truth.held_out.sum()) == held_out["images"]
    train = known_truth_split("train", 16, 32, (0.7, 0.3), holdout=0.5)
    reserved = {tuple(row) for row in truth.layouts[truth.held_out].tolist()}
    assert not reserved & {tuple(row) for row in train.layouts.tolist()}
    for part in (held_out, seen):
        assert part["nll_ratio"] == pytest.approx(part["nll"] / part["true_nll"])
        assert 0 <= part["tv_mean"] <= 1
    table = out.with_suffix(".md").read_text()
    assert "| 2 | cvae | held-out layouts |" in table and "Held-out layouts: 50%" in table


@pytest.mark.slow
def test_every_head_runs_end_to_end_with_annotators(tmp_path):
    """The side-by-side run of section 5 at the ci budget: each peer from its config, the
    best CVAE recipe from its own, GED and HM-IoU with 16 and 100 samples against 3
    annotators, NCC and ECE."""
    recipe = ROOT / "configs" / "known_truth_ciwae.yaml"
    out = tmp_path / "heads"
    report = benchmark.main([
        "--budget", "ci", "--heads", *benchmark.HEADS, "--objectives", "cnn", "cvae",
        "--recipes", f"ciwae={recipe}", "--annotators", "3", "--work-dir", str(tmp_path),
        "--out", str(out),
    ])  # fmt: skip
    runs = {run["objective"]: run for run in report["runs"]}
    assert set(runs) == {"cnn", "cvae", *benchmark.PEERS, "ciwae"}
    declared = {"cnn": "exact", "cvae": "importance", "ciwae": "importance",
                "probunet": "importance", "ssn": "monte_carlo", "mc_dropout": "monte_carlo",
                "ensemble": "exact"}  # fmt: skip
    for name, run in runs.items():
        test = run["test"]
        assert run["head"] == (name if name in benchmark.PEERS else "cvae")
        assert test["nll_estimator"] == declared[name]
        for key in ("ged_16", "ged_100", "hm_iou_16", "hm_iou_100", "ece", "ece_occluded"):
            assert math.isfinite(test[key]), (name, key)
        assert 0 <= test["hm_iou_100"] <= 1
        assert math.isnan(test["ncc"]) or -1 <= test["ncc"] <= 1
        config = load_config(next(tmp_path.glob(f"ci*/K2/{name}/seed0/config.yaml")))
        assert config.model.head == run["head"] and config.data.known_truth_annotators == 3
    ciwae = load_config(next(tmp_path.glob("ci*/K2/ciwae/seed0/config.yaml"))).model
    assert ciwae.elbo_share == load_config(recipe).model.elbo_share > 0
    table = out.with_suffix(".md").read_text()
    assert "| 2 | ensemble |" in table and "| 2 | ciwae |" in table and "HM-IoU, S=100" in table
    with pytest.raises(SystemExit):  # a recipe may not take a name the table already has
        benchmark.main(["--budget", "ci", "--recipes", f"cvae={recipe}", "--out", str(out)])
