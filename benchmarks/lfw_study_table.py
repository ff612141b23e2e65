"""The LFW CPU study's table: Table 2's rows trained with the chosen recipe, scored on test once.

`table_runs` is what ``python benchmarks/lfw_study.py --stage table`` trains (through the
study's resumable, pinned runs): every asked-for row of Table 2 (benchmarks/segmentation.py's
ROWS) and seed, as RUNS/table/<row>/seed<k>; the peer heads' rows (`PEER_ROWS`: the peer on
the recipe's backbone, data and training, with noise injection) when named. The row alias
``best-stochastic`` is the GSNN, CVAE or hybrid row whose seed-0 run has the best validation
pixel accuracy; the choice is written to RUNS/choices.json and kept.

`score` (``--stage score``) evaluates each finished run's best checkpoint (chosen on the
validation split during training) on the test split, once: the result is kept in the run's
test.json and never recomputed. Then Table 4's partial-observation grid on the test split,
for the CVAE or hybrid row and the GDNN row with the best validation pixel accuracy, and the
summary (one record per row and seed, the means with standard errors, and the issue's goals).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from lfw_study import RECIPES, Run, StudyError, _now, _read_json, _write_json, read_curve

BEST_STOCHASTIC = "best-stochastic"
STOCHASTIC_OBJECTIVES = ("gsnn", "cvae", "hybrid")
# the peers (issue 20) beside Table 2's rows: not in the default --rows, asked for by name
PEER_ROWS = {
    "ProbUNet (NI)": "probunet",
    "SSN (NI)": "ssn",
    "MC dropout (NI)": "mc_dropout",
    "ensemble (NI)": "ensemble",
}
# data settings that turn the (LFW-based) recipe configs into the same run on CUB
DATASET_OVERRIDES = {"lfw": [], "cub": ["data.dataset=cub", "data.val_fraction=0.1"]}


def _rows() -> dict[str, tuple[str, bool, bool]]:
    """Row name -> (objective, multi-scale losses, noise injection), in Table 2's order."""
    from segmentation import ROWS

    return {name: (objective, msc, noise) for name, objective, msc, noise in ROWS}


def slug(row: str) -> str:
    """A row's folder name: "CNN (msc, NI)" -> "CNN_msc_NI"."""
    return row.replace(" (", "_").replace(", ", "_").replace(")", "").replace(" ", "_")


def row_overrides(row: str, seed: int, dataset: str) -> tuple[str, ...]:
    """The settings of a Table 2 row or a peer row on top of the recipe's configs."""
    if row in PEER_ROWS:  # the peer head on the recipe's backbone, data and training
        return (f"model.head={PEER_ROWS[row]}", "data.noise=0.4", f"train.seed={seed}",
                *DATASET_OVERRIDES[dataset])  # fmt: skip
    objective, msc, noise = _rows()[row]
    return (
        f"model.objective={objective}",
        f"model.scale_weights={[1.0, 1.0, 1.0] if msc else [0.0, 0.0, 1.0]}",
        f"data.noise={0.4 if noise else 0.0}",
        f"train.seed={seed}",
        *DATASET_OVERRIDES[dataset],
    )


def _run_dir(runs: Path, row: str, seed: int) -> Path:
    return runs / "table" / slug(row) / f"seed{seed}"


def _best_validation(runs: Path, rows: list[str], seed: int = 0) -> str:
    """The row whose run (of ``seed``) has the best validation pixel accuracy; every one of
    them must have finished."""
    accuracy = {}
    for row in rows:
        done = _read_json(_run_dir(runs, row, seed) / "done.json")
        if done is None:
            raise StudyError(
                f"choosing among {rows} needs every one finished (seed {seed}); "
                f"{row!r} is not (train it with --stage table first)"
            )
        accuracy[row] = done["best_pixel_accuracy"]
    return max(accuracy, key=accuracy.__getitem__)


def choose(runs: Path, name: str, candidates: list[str]) -> str:
    """A choice made on validation, recorded once in RUNS/choices.json and kept."""
    choices = _read_json(runs / "choices.json") or {}
    if name not in choices:
        chosen = _best_validation(runs, candidates)
        choices[name] = {"row": chosen, "among": candidates, "by": "validation pixel accuracy "
                         "of the seed-0 runs' best checkpoints", "at": _now()}  # fmt: skip
        _write_json(runs / "choices.json", choices)
    return choices[name]["row"]


def _rows_of(objectives: tuple[str, ...]) -> list[str]:
    return [row for row, (objective, msc, _) in _rows().items() if objective in objectives]


# the rule that chooses the recipe (docs/benchmarks/lfw128.md, written before the choice)
LAST_VALIDATIONS, TIE_POINTS = 3, 0.3


def recipe_scores(recipe_runs: Path) -> dict[str, dict[str, float]]:
    """Per recipe: the mean validation pixel accuracy of its last `LAST_VALIDATIONS`
    validations in its final phase, and its CPU-hours. Every recipe must have finished."""
    scores = {}
    for recipe, phases in RECIPES.items():
        run_dir = recipe_runs / recipe
        if not (run_dir / "done.json").is_file():
            raise StudyError(f"the recipe choice needs every recipe finished; {run_dir} is not")
        rows = [r for r in read_curve(run_dir) if r["phase"] == phases[-1]][-LAST_VALIDATIONS:]
        scores[recipe] = {
            "mean_last_pixel_accuracy": sum(r["pixel_accuracy"] for r in rows) / len(rows),
            "cpu_hours": read_curve(run_dir)[-1]["cpu_s"] / 3600,
        }
    return scores


def choose_recipe(scores: dict[str, dict[str, float]]) -> str:
    """The highest mean; a recipe within `TIE_POINTS` of it that costs less CPU wins."""
    best = max(score["mean_last_pixel_accuracy"] for score in scores.values())
    near = [r for r, v in scores.items() if v["mean_last_pixel_accuracy"] >= best - TIE_POINTS]
    return min(near, key=lambda recipe: scores[recipe]["cpu_hours"])


def _recipe(args: argparse.Namespace) -> str:
    """--recipe, or with ``auto`` the rule's choice from --recipe-runs (recorded, kept)."""
    if args.recipe != "auto":
        return args.recipe
    if not args.recipe_runs:
        raise StudyError("--recipe auto needs --recipe-runs (the recipes' runs folder)")
    runs = Path(args.runs)
    choices = _read_json(runs / "choices.json") or {}
    if "recipe" not in choices:
        scores = recipe_scores(Path(args.recipe_runs))
        choices["recipe"] = {"recipe": choose_recipe(scores), "scores": scores, "at": _now(),
                             "by": f"mean validation pixel accuracy of the last "
                             f"{LAST_VALIDATIONS} validations; within {TIE_POINTS} points "
                             "of the best, the cheaper"}  # fmt: skip
        runs.mkdir(parents=True, exist_ok=True)
        _write_json(runs / "choices.json", choices)
    return choices["recipe"]["recipe"]


def table_runs(args: argparse.Namespace) -> list[Run]:
    """The runs of ``--rows`` x ``--seeds`` with the recipe ``--recipe``."""
    args.recipe = _recipe(args)
    if args.recipe not in RECIPES:
        raise StudyError(f"unknown --recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    known = [*_rows(), *PEER_ROWS]
    rows = []
    for row in args.rows or list(_rows()):
        if row == BEST_STOCHASTIC:
            row = choose(Path(args.runs), BEST_STOCHASTIC, _rows_of(STOCHASTIC_OBJECTIVES))
        elif row not in known:
            raise StudyError(f"unknown row {row!r}; known: {', '.join(known)}, {BEST_STOCHASTIC}")
        rows.append(row)
    runs = Path(args.runs)
    return [
        Run(str(_run_dir(runs, row, seed).relative_to(runs)), args.recipe,
            row_overrides(row, seed, args.dataset))
        for seed in args.seeds for row in dict.fromkeys(rows)
    ]  # fmt: skip


# ------------------------------------------------------------------------ scoring on test
def _test_config(checkpoint: Path, args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from cvae_seg.training import load_trained, select_device

    model, config, classes = load_trained(checkpoint, select_device(args.device))
    config.data.root, config.data.cache_dir = args.data_root, args.cache_dir
    return model, config, classes


def _test_loader(config: Any, device: Any) -> Any:
    from cvae_seg.training import dataset_for, make_loader

    return make_loader(dataset_for(config, "test"), config.eval.batch_size, 0, device)


def _best_checkpoint(run_dir: Path) -> Path:
    done = _read_json(run_dir / "done.json")
    return run_dir / RECIPES[done["recipe"]][-1] / "best.pt"


def score_run(run_dir: Path, row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run's test.json: its best checkpoint scored on the test split (made once)."""
    kept = _read_json(run_dir / "test.json")
    if kept is not None:
        return kept
    import torch

    from cvae_seg.evaluation import evaluate

    model, config, classes = _test_config(_best_checkpoint(run_dir), args)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    metrics = evaluate(model, _test_loader(config, device), classes, device,
                       num_samples=args.samples, progress=None)  # fmt: skip
    done, curve = _read_json(run_dir / "done.json"), read_curve(run_dir)
    record = {
        "model": row, "head": config.model.head, "objective": config.model.objective,
        "noise": config.data.noise > 0, "seed": seed, "multiscale":
        config.model.head == "cvae" and min(config.model.scale_weights[:2]) > 0,
        "dataset": config.data.dataset, "split": "test", "size": config.data.size,
        "updates": done["steps"], "cpu_hours": round(curve[-1]["cpu_s"] / 3600, 3),
        "val_best_pixel_accuracy": done["best_pixel_accuracy"],
        "pixel_accuracy": metrics["pixel_accuracy"], "class_accuracy": metrics["class_accuracy"],
        "iou": {name: metrics[f"iou_{name}"] for name in classes},
        "mean_iou": metrics["mean_iou"], "foreground_iou": metrics["foreground_iou"],
        "nll": metrics["nll"], "nll_stderr": metrics["nll_stderr"],
        "nll_estimator": model.likelihood_method,
        "nll_samples": 1 if model.likelihood_method == "exact" else args.samples,
        "run": str(run_dir), "trained_at": done["commit"], "scored": _now(),
    }  # fmt: skip
    _write_json(run_dir / "test.json", record)
    print(f"scored {row} seed {seed}: {record['pixel_accuracy']:.2f}% pixel accuracy", flush=True)
    return record


def table4(runs: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """Table 4 on the test split (RUNS/table4.json, made once): of the CVAE and hybrid rows
    trained, and of the GDNN rows, the one with the best validation pixel accuracy (seed 0).
    Called once every run of the study has finished, so that the choice sees them all."""
    kept = _read_json(runs / "table4.json")
    if kept is not None:
        return kept
    from cvae_seg.evaluation import partial_observation

    candidates = {
        label: [row for row in _rows_of(objectives) if _run_dir(runs, row, 0).is_dir()]
        for label, objectives in (("cvae", ("cvae", "hybrid")), ("gdnn", ("gdnn",)))
    }
    if not all(candidates.values()):
        return None
    rows = {label: choose(runs, f"table4_{label}", among) for label, among in candidates.items()}
    result: dict[str, Any] = {"split": "test", "rows": rows, "seed": 0}
    for label, row in rows.items():
        model, config, _ = _test_config(_best_checkpoint(_run_dir(runs, row, 0)), args)
        device = next(model.parameters()).device
        fill = [-m / s for m, s in zip(config.data.mean, config.data.std, strict=True)]
        loader = _test_loader(config, device)
        result[label] = partial_observation(model, loader, device, fill, progress=None)
    result["scored"] = _now()
    _write_json(runs / "table4.json", result)
    return result


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Score every finished table run (once each), Table 4, and write the summary."""
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    records, waiting = [], []
    for row in [*_rows(), *PEER_ROWS]:
        for run_dir in sorted((runs / "table" / slug(row)).glob("seed*")):
            seed = int(run_dir.name.removeprefix("seed"))
            if (run_dir / "done.json").is_file():
                records.append(score_run(run_dir, row, seed, args))
            else:
                waiting.append(f"{row} seed {seed}")
    summary = {
        "command": shlex.join(["python", "benchmarks/lfw_study.py", *sys.argv[1:]]),
        "date": _now(),
        "hardware": _hardware(args.device),
        "likelihood_samples": args.samples,
        "unfinished": waiting,
        "records": records,
        "models": aggregate(records),
        "goals": goals(records),
        "table4": None if waiting else table4(runs, args),
        "choices": _read_json(runs / "choices.json") or {},
    }
    from lfw_study_report import write_summary

    write_summary(summary, Path(args.summary))
    return summary


def _hardware(device: str) -> str:
    from cvae_seg.reporting import describe_hardware
    from cvae_seg.training import select_device

    return describe_hardware(select_device(device))


# ------------------------------------------------------------------ means and the goals
METRICS = ("pixel_accuracy", "class_accuracy", "mean_iou", "nll")


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row: mean and standard error (None for one seed) of each metric over seeds."""
    from cvae_seg.reporting import mean_stderr

    models: dict[str, dict[str, Any]] = {}
    for row in dict.fromkeys(r["model"] for r in records):
        mine = [r for r in records if r["model"] == row]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for metric in METRICS:
            mean, error = mean_stderr([r[metric] for r in mine])
            entry[metric] = {"mean": mean, "stderr": None if math.isnan(error) else error}
        entry["iou"] = {}
        for name in mine[0]["iou"]:
            mean, error = mean_stderr([r["iou"][name] for r in mine])
            entry["iou"][name] = {"mean": mean, "stderr": None if math.isnan(error) else error}
        entry["cpu_hours"] = sum(r["cpu_hours"] for r in mine) / len(mine)
        models[row] = entry
    return models


def goals(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's three goals, each as measured (None where a needed row is missing), over
    Table 2's rows: the peers' rows are reported beside them, not counted for the goals."""
    records = [r for r in records if r["model"] not in PEER_ROWS]
    models = aggregate(records)
    best = max(records, key=lambda r: r["pixel_accuracy"], default=None)
    result: dict[str, Any] = {
        "best_pixel_accuracy": None if best is None else
        {"model": best["model"], "seed": best["seed"], "value": best["pixel_accuracy"],
         "at_least_95": best["pixel_accuracy"] >= 95.0},
    }  # fmt: skip
    for noise in ("", ", NI"):
        cnn, cvae = models.get(f"CNN (msc{noise})"), models.get(f"CVAE (msc{noise})")
        if cnn and cvae:
            ratio = cvae["nll"]["mean"] / cnn["nll"]["mean"]
            result[f"cvae_nll_over_cnn{noise.replace(', ', '_')}"] = {
                "ratio": ratio,
                "at_most_a_third": ratio <= 1 / 3,
            }
    cnn = models.get("CNN (msc, NI)")
    for row in ("GSNN (msc, NI)", "hybrid (msc, NI)"):
        if cnn and row in models:
            gap = models[row]["mean_iou"]["mean"] - cnn["mean_iou"]["mean"]
            # the standard error of the difference, from the rows with several seeds
            errors = [m["mean_iou"]["stderr"] for m in (cnn, models[row])]
            known = [e for e in errors if e is not None]
            error = math.sqrt(sum(e * e for e in known)) if known else None
            result[f"{row} mean IoU over CNN (msc, NI)"] = {
                "gap": gap,
                "stderr": error,
                "seeds": [len(cnn["seeds"]), len(models[row]["seeds"])],
                "ahead_by_more_than_a_stderr": None if error is None else gap > error,
            }
    return result
