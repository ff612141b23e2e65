"""The LFW CPU study's table: Table 2's rows trained with the chosen recipe, scored on test once.

`table_runs` is what ``python benchmarks/lfw_study.py --stage table`` trains (through the
study's resumable, pinned runs): every asked-for row of Table 2 (benchmarks/segmentation.py's
ROWS) and seed, as RUNS/table/<row>/seed<k>; the peer heads' rows (`PEER_ROWS`: the peer on
the recipe's backbone, data and training, with noise injection) and our best CVAE recipe's
(`RECIPE_ROWS`) when named; the ensemble trained apart (`APART_ROWS`) is not trained
but joined from finished runs of another row by `score` (benchmarks/lfw_study_ensemble.py).
The row alias
``best-stochastic`` is the GSNN, CVAE or hybrid row whose seed-0 run has the best validation
pixel accuracy; the choice is written to RUNS/choices.json and kept.

A table run is scored on the test split once, as soon as it finishes (`finish_run`): its
best checkpoint (chosen on the validation split during training) gives the run's test.json,
its samples' GED, HM-IoU and NCC against the annotation (samples.json), a seed-0
CVAE, hybrid or GDNN run its Table 4 grid (partial.json), a stochastic run a sample grid of
test images (test_samples.png). Scoring then, rather than after the last run,
lets the checkpoint go: with ``--keep DIR`` each finished run's small files (`KEPT_RUN`, no
checkpoint) and the table's choices and plan are copied to DIR, and a later call on a machine
where RUNS is gone copies them back (`restore`) and trains only what is missing. No choice
reads a test score: best-stochastic and Table 4's rows are chosen on validation alone.

`score` (``--stage score``) gathers the test records and sample scores (making any that a
finished run lacks), Table 4 for the CVAE or hybrid row and the GDNN row with the best
validation pixel accuracy, and the summary (one record per row and seed, the means with
standard errors, and the issue's goals).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kept_runs import copy_kept, restore_run
from lfw_study import (
    CURVE,
    DONE,
    RECIPES,
    RUN_RECORD,
    STUDY,
    Run,
    StudyError,
    _git,
    _now,
    _read_json,
    _write_json,
    read_curve,
)

BEST_STOCHASTIC = "best-stochastic"
STOCHASTIC_OBJECTIVES = ("gsnn", "cvae", "hybrid")
# the peers (issue 20) beside Table 2's rows: not in the default --rows, asked for by name
PEER_ROWS = {
    "ProbUNet (NI)": "probunet",
    "SSN (NI)": "ssn",
    "MC dropout (NI)": "mc_dropout",
    "ensemble (NI)": "ensemble",
}
# our best CVAE recipe of the known-truth study (configs/known_truth_ciwae.yaml, issue 20),
# asked for by name like the peers: the CVAE (msc, NI) trained on 0.8 x the importance-
# weighted bound (k = 50) + 0.2 x the k-sample ELBO, with a 16-Gaussian mixture prior and
# a KL warm-up over the same eighth of training as there (1,000 of 8,000 updates there; 200
# is an eighth of the chosen recipe's 1,600: another recipe would need its own)
RECIPE_ROWS = {
    "CVAE recipe (msc, NI)": (
        "model.objective=cvae", "model.scale_weights=[1.0, 1.0, 1.0]", "data.noise=0.4",
        "model.importance_samples=50", "model.elbo_share=0.2", "model.prior_components=16",
        "train.kl_warmup_steps=200",
    ),
}  # fmt: skip
# the ensemble trained apart: M finished runs of a deterministic row (`member_seeds`) joined
# by DeepEnsemble.from_models at --stage score (benchmarks/lfw_study_ensemble.py); never
# trained as a run itself. On one CPU thread "ensemble (NI)" takes over three hours, more
# than a machine lasts here, where its members trained apart take under one each, two at a
# time. Four members, not the head's default five: with the fifth, members and scoring
# would not fit the three hours a machine lasts here (2,700 CPU-seconds a member beside
# another job, measured 2026-12-04)
APART_ROWS = {"ensemble (NI, apart)": ("CNN (NI)", 4)}
# a peer's settings of its paper where the config's shared default is the CVAE's: the
# Probabilistic U-Net's global latent has 6 dimensions (Kohl et al. 2018), the CVAE's map 32
PEER_SETTINGS = {"probunet": ("model.latent_channels=6",)}
# the rule that chooses the recipe (docs/benchmarks/lfw128.md, written before the choice),
# whose measure also makes the table's choices (best-stochastic, Table 4's rows)
LAST_VALIDATIONS, TIE_POINTS = 3, 0.3
# the rows Table 4 chooses from: the CVAE side and the GDNN side
TABLE4_OBJECTIVES = {"cvae": ("cvae", "hybrid"), "gdnn": ("gdnn",)}
# what --keep copies: of a finished run (never its checkpoints), and of the table
# a finished table run's scores on test: its record, Table 4 grid, samples against the truth
TEST, PARTIAL, SAMPLES = "test.json", "partial.json", "samples.json"
# the table's choices made on validation, the runs asked for, and Table 4 once made
CHOICES, PLAN, TABLE4 = "choices.json", "plan.json", "table4.json"
# a finished run's rows of the picture of every model (benchmarks/lfw_study_figure.py), kept
# so that the picture needs no checkpoint: every checkpoint goes with its machine
FIGURE_ROWS = "figure_samples.npz"
KEPT_RUN = (RUN_RECORD, CURVE, DONE, TEST, PARTIAL, SAMPLES, FIGURE_ROWS)
KEPT_TABLE = (STUDY, CHOICES, PLAN)
SAMPLE_GRID = "test_samples.png"  # a stochastic run's samples of test images (not kept)
CALIBRATION_SAMPLES = 16  # the ECE's predictive distribution: the mean of 16 samples' softmax
# issue 20's sample columns on LFW: GED and HM-IoU of S samples against the one annotation,
# as the LIDC protocol scores them against several (its S: 16 and 100; 16 here, on the CPU)
ANNOTATION_SAMPLES = 16
# one run finished at a time in a table process: --jobs 2 runs finish in two threads, and
# scoring seeds torch's one global random generator (the sampled -CLL and ECE)
_FINISHING = threading.Lock()
# data settings that turn the (LFW-based) recipe configs into the same run on CUB
DATASET_OVERRIDES = {"lfw": [], "cub": ["data.dataset=cub", "data.val_fraction=0.1"]}


def _rows() -> dict[str, tuple[str, bool, bool]]:
    """Row name -> (objective, multi-scale losses, noise injection), in Table 2's order."""
    from segmentation import ROWS

    return {name: (objective, msc, noise) for name, objective, msc, noise in ROWS}


def slug(row: str) -> str:
    """A row's folder name: "CNN (msc, NI)" -> "CNN_msc_NI"."""
    return row.replace(" (", "_").replace(", ", "_").replace(")", "").replace(" ", "_")


def side_rows() -> list[str]:
    """Issue 20's rows beside Table 2's (our recipe's, then the peers'), in table order."""
    return [*RECIPE_ROWS, *PEER_ROWS, *APART_ROWS]


def member_seeds(row: str, seed: int) -> list[int]:
    """The seeds of the member runs of an `APART_ROWS` row's run ``seed``: 1-4 for seed 0
    (seed 0 of the member row is its own run in the table), 5-8 for seed 1, ..."""
    members = APART_ROWS[row][1]
    return list(range(1 + seed * members, 1 + (seed + 1) * members))


def row_overrides(row: str, seed: int, dataset: str) -> tuple[str, ...]:
    """The settings of a Table 2 row, our recipe's row or a peer row on top of the recipe's
    configs."""
    if row in RECIPE_ROWS:
        return (*RECIPE_ROWS[row], f"train.seed={seed}", *DATASET_OVERRIDES[dataset])
    if row in APART_ROWS:  # what its run.json records: the members' row and seeds
        member_row, members = APART_ROWS[row]
        return ("model.head=ensemble", f"model.members={members}",
                f"members: {member_row} seeds {member_seeds(row, seed)}",
                *DATASET_OVERRIDES[dataset])  # fmt: skip
    if row in PEER_ROWS:  # the peer head on the recipe's backbone, data and training
        head = PEER_ROWS[row]
        return (f"model.head={head}", *PEER_SETTINGS.get(head, ()), "data.noise=0.4",
                f"train.seed={seed}", *DATASET_OVERRIDES[dataset])  # fmt: skip
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


def _validation_score(run_dir: Path) -> float | None:
    """The mean validation pixel accuracy of a finished run's last `LAST_VALIDATIONS`
    validations (its final phase), the recipe rule's measure: one validation wobbles by up
    to half a point. None while the run has not finished."""
    done = _read_json(run_dir / DONE)
    if done is None:
        return None
    return _mean_last_validations(run_dir, RECIPES[done["recipe"]][-1])


def _mean_last_validations(run_dir: Path, final_phase: str) -> float:
    rows = [r for r in read_curve(run_dir) if r["phase"] == final_phase][-LAST_VALIDATIONS:]
    return sum(r["pixel_accuracy"] for r in rows) / len(rows)


def _best_validation(runs: Path, rows: list[str], seed: int = 0) -> str:
    """The row whose run (of ``seed``) scores best on validation (`_validation_score`);
    every one of them must have finished."""
    scores = {}
    for row in rows:
        scores[row] = _validation_score(_run_dir(runs, row, seed))
        if scores[row] is None:
            raise StudyError(
                f"choosing among {rows} needs every one finished (seed {seed}); "
                f"{row!r} is not (train it with --stage table first)"
            )
    return max(scores, key=scores.__getitem__)


@contextmanager
def _locked_json(runs: Path, name: str) -> Iterator[dict[str, Any]]:
    """RUNS/<name> to read and change, under a lock (a table and a score process may run at
    once); written back when the block ends."""
    runs.mkdir(parents=True, exist_ok=True)
    with (runs / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read_json(runs / name) or {}
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            _write_json(runs / name, data)


def _choices(runs: Path) -> Any:
    """RUNS/choices.json (`_locked_json`): the choices made on validation, each kept."""
    return _locked_json(runs, CHOICES)


def planned_runs(runs: Path) -> list[tuple[str, int]]:
    """Every (row, seed) a table call has asked for (RUNS/plan.json): what the summary and
    Table 4 wait for, whether or not its run has started."""
    plan = _read_json(runs / PLAN) or {}
    return [(row, seed) for row, seed in plan.get("runs", [])]


def choose(runs: Path, name: str, candidates: list[str]) -> str:
    """A choice made on validation, recorded once in RUNS/choices.json and kept."""
    with _choices(runs) as choices:
        if name not in choices:
            chosen = _best_validation(runs, candidates)
            choices[name] = {"row": chosen, "among": candidates, "at": _now(),
                             "by": f"mean validation pixel accuracy of the seed-0 runs' last "
                             f"{LAST_VALIDATIONS} validations"}  # fmt: skip
        return choices[name]["row"]


def _rows_of(objectives: tuple[str, ...]) -> list[str]:
    return [row for row, (objective, msc, _) in _rows().items() if objective in objectives]


def recipe_scores(recipe_runs: Path) -> dict[str, dict[str, float]]:
    """Per recipe: the mean validation pixel accuracy of its last `LAST_VALIDATIONS`
    validations in its final phase, and its CPU-hours. Every recipe must have finished."""
    scores = {}
    for recipe, phases in RECIPES.items():
        run_dir = recipe_runs / recipe
        if not (run_dir / DONE).is_file():
            raise StudyError(f"the recipe choice needs every recipe finished; {run_dir} is not")
        scores[recipe] = {
            "mean_last_pixel_accuracy": _mean_last_validations(run_dir, phases[-1]),
            "cpu_hours": read_curve(run_dir)[-1]["cpu_s"] / 3600,
        }
    return scores


def choose_recipe(scores: dict[str, dict[str, float]]) -> str:
    """The highest mean; a recipe within `TIE_POINTS` of it that costs less CPU wins."""
    best = max(score["mean_last_pixel_accuracy"] for score in scores.values())
    near = [r for r, v in scores.items() if v["mean_last_pixel_accuracy"] >= best - TIE_POINTS]
    return min(near, key=lambda recipe: scores[recipe]["cpu_hours"])


def _recipe(args: argparse.Namespace) -> str:
    """--recipe, or with ``auto`` the rule's choice from --recipe-runs; recorded on the first
    table call and kept: a later call with another --recipe is refused (its runs would mix
    two trainings in one table)."""
    with _choices(Path(args.runs)) as choices:
        kept = choices.get("recipe", {}).get("recipe")
        if args.recipe == "auto" and kept is None:
            if not args.recipe_runs:
                raise StudyError("--recipe auto needs --recipe-runs (the recipes' runs folder)")
            scores = recipe_scores(Path(args.recipe_runs))
            choices["recipe"] = {"recipe": choose_recipe(scores), "scores": scores,
                                 "at": _now(), "by": f"mean validation pixel accuracy of the "
                                 f"last {LAST_VALIDATIONS} validations; within {TIE_POINTS} "
                                 "points of the best, the cheaper"}  # fmt: skip
        elif args.recipe != "auto" and kept is None:
            choices["recipe"] = {"recipe": args.recipe, "by": "given with --recipe",
                                 "at": _now()}  # fmt: skip
        elif args.recipe not in ("auto", kept):
            raise StudyError(f"--recipe {args.recipe}: this table's runs use {kept} "
                             f"({Path(args.runs) / 'choices.json'}); give --recipe {kept} "
                             "or auto, or another --runs folder")  # fmt: skip
        return choices["recipe"]["recipe"]


def resolve_rows(runs: Path, names: list[str]) -> list[str]:
    """The rows ``names`` asks for, `BEST_STOCHASTIC` as the row it chooses; an unknown
    name is refused, naming the known ones."""
    known = [*_rows(), *side_rows()]
    rows = []
    for row in names:
        if row == BEST_STOCHASTIC:
            row = choose(runs, BEST_STOCHASTIC, _rows_of(STOCHASTIC_OBJECTIVES))
        elif row not in known:
            raise StudyError(f"unknown row {row!r}; known: {', '.join(known)}, {BEST_STOCHASTIC}")
        rows.append(row)
    return rows


def table_runs(args: argparse.Namespace) -> list[Run]:
    """The runs of ``--rows`` x ``--seeds`` with the recipe ``--recipe``; with --keep, the
    kept runs restored first (`restore_table` must have merged the kept choices and plan)."""
    args.recipe = _recipe(args)
    if args.recipe not in RECIPES:
        raise StudyError(f"unknown --recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    if args.keep:  # before the choices, which read the seed-0 runs
        restore_runs(Path(args.keep), Path(args.runs), args.recipe, args)
    rows = resolve_rows(Path(args.runs), args.rows or list(_rows()))
    apart = [row for row in rows if row in APART_ROWS]
    if apart:
        raise StudyError(_not_trained(apart[0]))
    runs = Path(args.runs)
    with _locked_json(runs, PLAN) as plan:  # what the summary waits for
        planned = plan.setdefault("runs", [])
        for seed in args.seeds:
            planned += [[row, seed] for row in rows if [row, seed] not in planned]
    return [
        Run(str(_run_dir(runs, row, seed).relative_to(runs)), args.recipe,
            row_overrides(row, seed, args.dataset))
        for seed in args.seeds for row in dict.fromkeys(rows)
    ]  # fmt: skip


def _not_trained(row: str) -> str:
    member_row, members = APART_ROWS[row]
    seeds = member_seeds(row, 0)
    return (f"{row!r} is not trained as a run: --stage score joins its {members} members, the "
            f"finished {member_row!r} runs of seeds {seeds} (train those with --rows "
            f"{shlex.quote(member_row)} --seeds {' '.join(map(str, seeds))})")  # fmt: skip


# ------------------------------------------------------------------------ scoring on test
def _scored_at(args: argparse.Namespace) -> str:
    """The commit the test records name as their scoring code: this checkout's HEAD, or
    ``args.scored_at`` where a copy without .git scores (benchmarks/device_lfw_run.py)."""
    return getattr(args, "scored_at", None) or _git("rev-parse", "HEAD")


def _test_config(checkpoint: Path, args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from cvae_seg.training import load_trained, select_device

    model, config, classes = load_trained(checkpoint, select_device(args.device))
    config.data.root, config.data.cache_dir = args.data_root, args.cache_dir
    return model, config, classes


def _test_loader(config: Any, device: Any) -> Any:
    from cvae_seg.training import dataset_for, make_loader

    return make_loader(dataset_for(config, "test"), config.eval.batch_size, 0, device)


def _best_checkpoint(run_dir: Path) -> Path:
    done = _read_json(run_dir / DONE)
    return run_dir / RECIPES[done["recipe"]][-1] / "best.pt"


def score_run(run_dir: Path, row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run's test.json: its best checkpoint scored on the test split (made once)."""
    kept = _read_json(run_dir / TEST)
    if kept is not None:
        return kept
    import torch

    from cvae_seg.evaluation import evaluate

    model, config, classes = _test_config(_best_checkpoint(run_dir), args)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    metrics = evaluate(model, _test_loader(config, device), classes, device,
                       num_samples=args.samples, progress=None,
                       calibration_samples=CALIBRATION_SAMPLES)  # fmt: skip
    done, curve = _read_json(run_dir / DONE), read_curve(run_dir)
    record = {
        "model": row, "head": config.model.head, "objective": config.model.objective,
        "noise": config.data.noise > 0, "seed": seed, "multiscale":
        config.model.head == "cvae" and min(config.model.scale_weights[:2]) > 0,
        "dataset": config.data.dataset, "split": "test", "size": config.data.size,
        "updates": done["steps"], "cpu_hours": round(curve[-1]["cpu_s"] / 3600, 3),
        "val_best_pixel_accuracy": done["best_pixel_accuracy"],
        "val_pixel_accuracy": _validation_score(run_dir),
        "pixel_accuracy": metrics["pixel_accuracy"], "class_accuracy": metrics["class_accuracy"],
        "iou": {name: metrics[f"iou_{name}"] for name in classes},
        "mean_iou": metrics["mean_iou"], "foreground_iou": metrics["foreground_iou"],
        "nll": metrics["nll"], "nll_stderr": metrics["nll_stderr"],
        "nll_estimator": model.likelihood_method,
        "nll_samples": 1 if model.likelihood_method == "exact" else args.samples,
        "ece": metrics["ece"], "ece_samples": CALIBRATION_SAMPLES,
        "reliability_diagram": metrics["reliability_diagram"],
        "recipe": done["recipe"], "run": str(run_dir), "trained_at": done["commit"],
        "scored_at": _scored_at(args), "scored": _now(),
    }  # fmt: skip
    _write_json(run_dir / TEST, record)
    # no score in the log: test numbers are read once, when every choice has been made
    print(f"scored {row} seed {seed} on the test split: {run_dir / 'test.json'}", flush=True)
    return record


def samples_run(run_dir: Path, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The run's `ANNOTATION_SAMPLES` samples of each test image against its one annotation
    (its samples.json, made once): GED, HM-IoU and the uncertainty NCC as
    `evaluate_annotators` scores them on multi-annotator data, here with A = 1. None for a
    run restored without its checkpoint."""
    kept, checkpoint = _read_json(run_dir / SAMPLES), _best_checkpoint(run_dir)
    # files made before the NCC was scored are made again where the checkpoint is still there
    # (the same seed draws the same samples, so GED and HM-IoU come out as they were)
    if not checkpoint.is_file() or (kept is not None and "ncc" in kept):
        return kept
    import torch

    from cvae_seg.evaluation import evaluate_annotators

    model, config, classes = _test_config(checkpoint, args)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    scores = evaluate_annotators(model, _test_loader(config, device), len(classes), device,
                                 sample_counts=(ANNOTATION_SAMPLES,), progress=None,
                                 ncc_samples=ANNOTATION_SAMPLES)  # fmt: skip
    result = {"split": "test", "samples": ANNOTATION_SAMPLES, **scores,
              "scored_at": _scored_at(args), "scored": _now()}  # fmt: skip
    _write_json(run_dir / SAMPLES, result)
    return result


def partial_run(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The run's Table 4 grid on the test split (its partial.json, made once)."""
    kept = _read_json(run_dir / PARTIAL)
    if kept is not None:
        return kept
    from cvae_seg.evaluation import partial_observation

    model, config, _ = _test_config(_best_checkpoint(run_dir), args)
    device = next(model.parameters()).device
    fill = [-m / s for m, s in zip(config.data.mean, config.data.std, strict=True)]
    grid = partial_observation(model, _test_loader(config, device), device, fill, progress=None)
    result = {"split": "test", "grid": grid, "scored_at": _scored_at(args),
              "scored": _now()}  # fmt: skip
    _write_json(run_dir / PARTIAL, result)
    return result


def _table4_rows() -> set[str]:
    """Table 2's rows that Table 4 chooses among (either side)."""
    return {row for objectives in TABLE4_OBJECTIVES.values() for row in _rows_of(objectives)}


def _table4_sides(runs: Path) -> list[list[str]]:
    """Table 4's candidates, per side (CVAE or hybrid; GDNN): the rows of that side whose
    seed-0 run a table call planned or started."""
    seed0 = {row for row, seed in planned_runs(runs) if seed == 0}
    seed0 |= {row for row in _rows() if _run_dir(runs, row, 0).is_dir()}
    return [[row for row in _rows_of(objectives) if row in seed0]
            for objectives in TABLE4_OBJECTIVES.values()]  # fmt: skip


def table4_ready(runs: Path) -> bool:
    """Whether Table 4's choice can be made: both sides have candidates (`_table4_sides`) and
    each candidate's seed-0 run has finished. The choice reads only those runs; other seeds,
    the peers' and our recipe's rows may still train."""
    sides = _table4_sides(runs)
    return all(sides) and all(
        (_run_dir(runs, row, 0) / DONE).is_file() for side in sides for row in side
    )


def table4(runs: Path, args: argparse.Namespace, make: bool = True) -> dict[str, Any] | None:
    """Table 4 on the test split (RUNS/table4.json, made once): of the CVAE and hybrid rows
    trained, and of the GDNN rows, the one best on validation (seed 0). Made only with
    ``make``, which the summary gives once `table4_ready`, so that the choice sees every
    candidate; kept from then on."""
    kept = _read_json(runs / TABLE4)
    if kept is not None or not make:
        return kept
    candidates = dict(zip(TABLE4_OBJECTIVES, _table4_sides(runs), strict=True))
    if not all(candidates.values()):
        return None
    rows = {label: choose(runs, f"table4_{label}", among) for label, among in candidates.items()}
    result: dict[str, Any] = {"split": "test", "rows": rows, "seed": 0}
    for label, row in rows.items():
        result[label] = partial_run(_run_dir(runs, row, 0), args)["grid"]
    result["scored"] = _now()
    _write_json(runs / TABLE4, result)
    return result


# --------------------------------------------------- finishing, keeping and restoring runs
def row_and_seed(run_name: str) -> tuple[str, int]:
    """The (row, seed) of a table run's name, table/<slug>/seed<k>."""
    _, folder, seed = run_name.split("/")
    rows = {slug(row): row for row in [*_rows(), *side_rows()]}
    return rows[folder], int(seed.removeprefix("seed"))


def _objective(row: str) -> str:
    """The row's objective (cnn, gdnn, gsnn, cvae, hybrid), or its peer head's name."""
    if row in RECIPE_ROWS:
        return "cvae"
    if row in APART_ROWS:
        return "ensemble"
    return PEER_ROWS[row] if row in PEER_ROWS else _rows()[row][0]


def finish_run(runs: Path, run_name: str, args: argparse.Namespace) -> None:
    """What a finished run needs made while its checkpoint is at hand: its test record, its
    samples against the annotation, its Table 4 grid (a seed-0 Table 4 candidate),
    its sample grid (a stochastic row; the one thing not kept, so a run restored from --keep
    has none), its rows of the picture of every model; then, with --keep, its kept copy
    (`keep_run`)."""
    with _FINISHING:
        _finish_run(runs, run_name, args)


def _finish_run(runs: Path, run_name: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    row, seed = row_and_seed(run_name)
    run_dir = runs / run_name
    score_run(run_dir, row, seed, args)
    samples_run(run_dir, seed, args)  # every seed: the NCC of a row whose seed 0 has none
    if seed == 0 and row in _table4_rows():
        partial_run(run_dir, args)
    drawn = (run_dir / SAMPLE_GRID).is_file()
    restored = not _best_checkpoint(run_dir).is_file()  # from --keep: no checkpoint to draw
    if _objective(row) in STOCHASTIC_OBJECTIVES and not (drawn or restored):
        sample_grid_of(run_dir, args)
    from lfw_study_figure import keep_figure_rows  # it imports this module

    keep_figure_rows(run_dir, args)
    if args.keep:
        keep_run(run_dir, Path(args.keep) / run_name)
        keep_table(runs, Path(args.keep))


def sample_grid_of(run_dir: Path, args: argparse.Namespace, count: int = 4) -> Path:
    """run_dir/`SAMPLE_GRID`: the first ``count`` test images, each with a random square
    hidden (under 40% of the side), the truth, the prediction, 6 samples and the
    uncertainty."""
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.training import dataset_for
    from cvae_seg.visualization import sample_grid

    model, config, _ = _test_config(_best_checkpoint(run_dir), args)
    test = dataset_for(config, "test")
    shown = list(range(min(count, len(test.arrays.images))))
    picture = sample_grid(model, test, shown, occlude=0.39)
    return atomic_save_image(run_dir / SAMPLE_GRID, picture)


def keep_run(run_dir: Path, kept_dir: Path) -> None:
    """Copy the finished run's `KEPT_RUN` files to kept_dir (done.json last: the mark)."""
    copy_kept(run_dir, kept_dir, KEPT_RUN, DONE)


def keep_table(runs: Path, keep: Path) -> None:
    """Copy the table's `KEPT_TABLE` files (its pin, choices and plan) to keep, each whole
    or not at all. RUNS holds all that keep held (`restore_table` merged it in first)."""
    copy_kept(runs, keep, KEPT_TABLE, mark="")


def restore_table(keep: Path, runs: Path) -> None:
    """Merge the kept table files into RUNS: the pin where RUNS has none, the union of the
    two plans, and the union of the choices, refusing a choice the two made differently."""
    runs.mkdir(parents=True, exist_ok=True)
    if (keep / STUDY).is_file() and not (runs / STUDY).is_file():
        copy_kept(keep, runs, [STUDY], mark="")
    with _locked_json(runs, PLAN) as plan:
        planned = plan.setdefault("runs", [])
        planned += [run for run in (_read_json(keep / PLAN) or {}).get("runs", [])
                    if run not in planned]  # fmt: skip
    with _choices(runs) as choices:
        for name, kept in (_read_json(keep / CHOICES) or {}).items():
            mine = choices.setdefault(name, kept)
            if _chosen(mine) != _chosen(kept):
                raise StudyError(
                    f"{keep / 'choices.json'} has {name} = {_chosen(kept)}, "
                    f"{runs / 'choices.json'} has {_chosen(mine)}: two tables in one --keep "
                    "or --runs folder; give each its own"
                )


def _chosen(choice: dict[str, Any]) -> Any:
    return choice.get("row", choice.get("recipe"))


def restore_runs(keep: Path, runs: Path, recipe: str, args: argparse.Namespace) -> list[str]:
    """Copy back each kept finished run that has not finished in RUNS (`kept_runs.
    restore_run`), once its run.json shows this table's recipe and the settings its row
    and seed get here (another data set or --set is refused, naming the file). The names of
    the runs restored."""
    restored = []
    for done in sorted(keep.glob(f"table/*/seed*/{DONE}")):
        name = done.parent.relative_to(keep).as_posix()
        record = _read_json(done.parent / RUN_RECORD) or {}
        try:
            row, seed = row_and_seed(name)
        except KeyError:
            raise StudyError(f"{done.parent}: no row of the table has this folder") from None
        wanted = [*args.set, *row_overrides(row, seed, args.dataset)]
        if (record.get("recipe"), record.get("overrides")) != (recipe, wanted):
            raise StudyError(
                f"{done.parent / 'run.json'}: kept with recipe {record.get('recipe')} and "
                f"overrides {record.get('overrides')}; this table gives {recipe} and {wanted} "
                "(another table: give it its own --keep folder)"
            )
        if restore_run(done.parent, runs / name, KEPT_RUN, DONE):
            print(f"{name}: restored from {keep}", flush=True)
            restored.append(name)
    return restored


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Score every finished table run (once each), Table 4, and write the summary."""
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    if args.keep:
        restore_table(Path(args.keep), runs)
        recipe = _chosen((_read_json(runs / CHOICES) or {}).get("recipe", {}))
        restore_runs(Path(args.keep), runs, recipe, args)
    from lfw_study_ensemble import join_apart_rows  # it imports this module

    join_apart_rows(runs, args)
    records, waiting, scored, sampled = [], [], [], {}
    for row, seed in _runs_to_score(runs):
        run_dir = _run_dir(runs, row, seed)
        if (run_dir / DONE).is_file():
            records.append({**score_run(run_dir, row, seed, args), **training_device(run_dir)})
            scored.append(run_dir)
            if seed == 0:
                sampled[row] = samples_run(run_dir, seed, args)
        else:
            waiting.append(f"{row} seed {seed}")
    for row, scores in sampled.items():
        if scores is None or "ncc" not in scores:
            _ncc_from_another_seed(runs, row, scores, args)
    summary = {
        "command": shlex.join(["python", "benchmarks/lfw_study.py", *sys.argv[1:]]),
        "date": _now(),
        "hardware": _hardware(args.device),
        "likelihood_samples": args.samples,
        "unfinished": waiting,
        "records": records,
        "models": aggregate(records),
        "goals": goals(records),
        "sample_scores": sampled,
        "table4": table4(runs, args, make=table4_ready(runs)),
        "choices": _read_json(runs / CHOICES) or {},
    }
    if args.keep:  # after Table 4: its grids (partial.json) are kept with their runs
        for run_dir in scored:
            keep_run(run_dir, Path(args.keep) / run_dir.relative_to(runs))
        keep_table(runs, Path(args.keep))
    from lfw_study_report import write_summary

    write_summary(summary, Path(args.summary))
    return summary


def training_device(run_dir: Path) -> dict[str, Any]:
    """Where the run trained: {} for the table's protocol (one CPU thread), else the GPU
    its run.json names (benchmarks/device_lfw_run.py) and the minutes it trained there, so
    that the summary never averages a GPU run's CPU seconds with the CPU runs' hours."""
    calls = (_read_json(run_dir / RUN_RECORD) or {}).get("calls", [])
    devices = sorted({call["device"] for call in calls if call.get("device")})
    if not devices:
        return {}
    minutes = sum(call.get("wall_s") or 0.0 for call in calls) / 60
    return {"trained_on": ", ".join(devices), "gpu_minutes": round(minutes, 2)}


def _ncc_from_another_seed(
    runs: Path, row: str, scores: dict[str, Any] | None, args: argparse.Namespace
) -> None:
    """A seed-0 run restored without its checkpoint has GED and HM-IoU but no NCC (scored
    later): take the NCC, named with its seed, from the lowest finished seed that has one
    (its kept samples.json, or one made from its checkpoint as seed 0's was)."""
    if scores is None:
        return
    folders = {
        int(f.name.removeprefix("seed")): f for f in (runs / "table" / slug(row)).glob("seed*")
    }
    for seed, folder in sorted(folders.items()):
        if seed == 0 or not (folder / DONE).is_file():
            continue
        other = samples_run(folder, seed, args)  # None: neither kept file nor checkpoint
        if other is not None and "ncc" in other:
            scores.update(ncc=other["ncc"], ncc_stderr=other["ncc_stderr"], ncc_seed=seed)
            return


def _runs_to_score(runs: Path) -> list[tuple[str, int]]:
    """Every run started or planned (`planned_runs`), Table 2's rows first, then `side_rows`."""
    order = [*_rows(), *side_rows()]
    folders = [
        (row, folder) for row in order for folder in (runs / "table" / slug(row)).glob("seed*")
    ]
    started = {(row, int(folder.name.removeprefix("seed"))) for row, folder in folders}
    wanted = started | set(planned_runs(runs))
    return sorted(wanted, key=lambda run: (order.index(run[0]), run[1]))


def _hardware(device: str) -> str:
    from cvae_seg.reporting import describe_hardware
    from cvae_seg.training import select_device

    return describe_hardware(select_device(device))


# ------------------------------------------------------------------ means and the goals
METRICS = ("pixel_accuracy", "class_accuracy", "mean_iou", "nll", "ece")


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
        entry.update(_training_cost(mine))
        models[row] = entry
    return models


def _training_cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's CPU-hours per run over its seeds trained on one CPU thread (None if none),
    and apart, those trained on a GPU (`training_device`): their seeds and minutes per run."""
    on_cpu = [r["cpu_hours"] for r in records if not r.get("trained_on")]
    cost: dict[str, Any] = {"cpu_hours": sum(on_cpu) / len(on_cpu) if on_cpu else None}
    on_gpu = [r for r in records if r.get("trained_on")]
    if on_gpu:
        cost["gpu"] = {
            "device": ", ".join(sorted({r["trained_on"] for r in on_gpu})),
            "seeds": [r["seed"] for r in on_gpu],
            "minutes": sum(r["gpu_minutes"] for r in on_gpu) / len(on_gpu),
        }
    return cost


def goals(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's three goals, each as measured (None where a needed row is missing), over
    Table 2's rows: our recipe's and the peers' rows are reported beside them, not counted
    for the goals."""
    records = [r for r in records if r["model"] in _rows()]
    models = aggregate(records)
    result: dict[str, Any] = {"best_pixel_accuracy": _best_model_goal(records, models)}
    for noise in ("", ", NI"):
        cnn, cvae = models.get(f"CNN (msc{noise})"), models.get(f"CVAE (msc{noise})")
        if cnn and cvae:
            ratio = cvae["nll"]["mean"] / cnn["nll"]["mean"]
            result[f"cvae_nll_over_cnn{noise.replace(', ', '_')}"] = {
                "ratio": ratio,
                "at_most_a_third": ratio <= 1 / 3,
                "seeds": [len(cvae["seeds"]), len(cnn["seeds"])],
            }
    cnn = models.get("CNN (msc, NI)")
    spread = pooled_seed_spread(records, "mean_iou")
    for row in ("GSNN (msc, NI)", "hybrid (msc, NI)"):
        if cnn and row in models:
            gap = models[row]["mean_iou"]["mean"] - cnn["mean_iou"]["mean"]
            seeds = [len(cnn["seeds"]), len(models[row]["seeds"])]
            error = None if spread is None else spread * math.sqrt(sum(1 / n for n in seeds))
            result[f"{row} mean IoU over CNN (msc, NI)"] = {
                "gap": gap,
                "stderr": error,
                "seeds": seeds,
                "ahead_by_more_than_a_stderr": None if error is None else gap > error,
            }
    return result


def _best_model_goal(records: list[dict[str, Any]], models: dict[str, Any]) -> dict | None:
    """The row chosen on validation (its seeds' mean `val_pixel_accuracy`), and whether its
    mean test pixel accuracy reaches 95%: the best of sixteen test scores would flatter."""
    if not records:
        return None
    validation = {row: sum(r["val_pixel_accuracy"] for r in records if r["model"] == row)
                  / len(models[row]["seeds"]) for row in models}  # fmt: skip
    row = max(validation, key=validation.__getitem__)
    test = models[row]["pixel_accuracy"]
    return {"model": row, "seeds": models[row]["seeds"], "validation": validation[row],
            "value": test["mean"], "stderr": test["stderr"],
            "at_least_95": test["mean"] >= 95.0}  # fmt: skip


def pooled_seed_spread(records: list[dict[str, Any]], metric: str) -> float | None:
    """The standard deviation of ``metric`` between seeds, pooled over the rows with more
    than one seed; None when no row has two. A row trained with one seed has a spread just
    as real, only unmeasured: the difference of two rows' means is judged with this one."""
    squares, freedom = 0.0, 0
    for row in dict.fromkeys(r["model"] for r in records):
        values = [r[metric] for r in records if r["model"] == row]
        if len(values) > 1:
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            freedom += len(values) - 1
    return math.sqrt(squares / freedom) if freedom else None
