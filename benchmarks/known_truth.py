"""The objectives and the peer heads on a task whose true p(y|x) is known exactly.

    python benchmarks/known_truth.py [--budget ci|cpu|gpu] [--tasks 2 4 8] [--seeds 0 1]
        [--config configs/known_truth_iw.yaml] [--heads cvae probunet ssn mc_dropout ensemble]
        [--split val|test|test2] [--holdout F] [--annotators A] [--hit-distance PX] [--steps N]
        [--work-dir work_dirs/known_truth] [--out results/known_truth_<budget>]
        [--figure FIGURE.png] [--merge A.json B.json --out OUT] [--diagnose CHECKPOINT]
        [--draw RUNS [RUNS ...] --figure FIGURE.png] [--reliability RELIABILITY.png]
        [--rescore RUNS --split test2 --out OUT]

A box's part behind an occluder is one of K shapes with unequal, known probabilities
(`cvae_seg.data.known_truth`), so log p(y|x) of every pair, the conditional entropy H and the
mode frequencies are exact. For K in --tasks and each seed, every model is trained: the CVAE
head's --objectives from --config (configs/known_truth.yaml: the paper's ELBO;
known_truth_iw.yaml: the importance-weighted bound), and each other head of --heads from
configs/known_truth_<head>.yaml (the same task, data and training). The protocol (issue 20,
docs/benchmarks/known_truth.md):

- Recipes are chosen on the validation split, which is what a run scores by default; the
  test split is scored once, with ``--split test``. The report records its split.
- ``--holdout F`` reserves that share of the 336 layouts for the test split (training and
  validation never see them); the test images with those layouts are reported apart.
- NLL, nats per image, by the estimator declared for the model (`known_truth_eval.
  declared_estimator`: importance sampling with a recognition net, Monte Carlo otherwise,
  exact for deterministic models), Monte Carlo beside it as a secondary column; over the
  true NLL of the same pairs (whose mean is about H, not H).
- TV: each sample (argmax map) is a hit for the nearest candidate only within
  ``--hit-distance`` pixels (`HIT_DISTANCE`), else a miss; TV to (pi, 0) per input (mean)
  and pooled, each beside the TV of a perfect sampler with as many samples
  (`cvae_seg.metrics.total_variation_floor`).
- GED, D^2 with d = 1 - IoU of the foreground, against the exact distribution (the first
  GED_SAMPLES samples); ECE of the samples' mean softmax; with ``--annotators A`` > 1, GED
  and HM-IoU with 16 and 100 samples against the A annotations and the uncertainty NCC.
- Pixel accuracy of predict() on the visible pixels, and KL(q||p) with its share of the
  negative ELBO (posterior collapse shows as a KL near 0).

Writes OUT.json and OUT.md after every run (mean and standard error over seeds) and, with
``--figure``, a sample grid of every model trained (its lowest seed) on the same inputs: a
section per K, a labelled row of samples per model (`known_truth_figure`); with
``--reliability``, every model's reliability diagram on the occluded pixels (a panel per
model, a row per K: `known_truth_reliability`). Budgets
(`BUDGETS`): ``ci`` (a few updates, for the tests; writes under --work-dir, never results/),
``cpu`` (1,500 updates, two seeds, for 2 CPU cores with --threads 1) and ``gpu`` (4,000
updates, three seeds, more samples). ``--steps`` overrides the budget's updates (runs go to
WORK/<budget>_<steps>steps). ``--merge A.json B.json --out OUT`` joins reports of seeds run
as separate jobs into one table; ``--diagnose`` prints where a trained CVAE's excess NLL
sits; ``--draw RUNS...`` draws the sample grid and/or the reliability figure of every model
saved in runs folders or work dirs; ``--rescore RUNS --split test2`` scores the finished
runs once more on new test pairs (`known_truth_rescore`), for when the test split's numbers
have already guided a choice. A finished run's scores are kept in its folder and an
unfinished one resumes from its last checkpoint, so the same command again goes on where it
stopped, and several processes running it share the runs (`known_truth_runs`).
docs/benchmarks/known_truth.md holds the measured tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from known_truth_ece_floor import task_floor  # noqa: E402
from known_truth_eval import _batched, evaluate_run, evaluation_set  # noqa: E402
from known_truth_figure import (  # noqa: E402
    figure_columns,
    sample_figure,
    save_figure_samples,
    saved_models,
)
from known_truth_reliability import NoKeptDiagram, reliability_figure  # noqa: E402
from known_truth_report import (  # noqa: E402
    ESTIMATORS,
    GED_CONVENTION,
    HEADS,
    HIT_DISTANCE,
    MISS_FRACTION,
    MODELS,
    NLL_PROTOCOL,
    OBJECTIVES,
    PEERS,
    SPLITS,
    legacy_tightest_nll,
    markdown,
    merge_reports,
    protocol,
    write_report,
)
from known_truth_rescore import rescore_runs  # noqa: E402
from known_truth_runs import (  # noqa: E402
    CHECKPOINT_INTERVAL,
    KeptFileError,
    OtherSettings,
    check_same_config,
    check_same_scoring,
    claimed,
    finished,
    keep,
    restore,
    train_and_score,
)

from cvae_seg import metrics  # noqa: E402
from cvae_seg.config import Config, load_config  # noqa: E402
from cvae_seg.data.known_truth import default_mode_probs  # noqa: E402
from cvae_seg.likelihood import masked_nll  # noqa: E402
from cvae_seg.objectives import get_objective  # noqa: E402
from cvae_seg.reporting import atomic_save_image, describe_hardware  # noqa: E402
from cvae_seg.training import load_trained, select_device  # noqa: E402

__all__ = [
    "BUDGETS", "ESTIMATORS", "GED_CONVENTION", "HEADS", "HIT_DISTANCE", "MISS_FRACTION",
    "MODELS", "NLL_PROTOCOL", "OBJECTIVES", "PEERS", "default_mode_probs", "diagnose_run",
    "evaluate_run", "legacy_tightest_nll", "load_config", "main", "prior_decomposition",
    "protocol", "run_benchmark", "sample_figure", "saved_models",
]  # fmt: skip

BUDGETS = {
    "ci": {"tasks": [2], "seeds": [0], "train": 16, "test": 6, "steps": 2, "batch": 4,
           "is": 4, "mc": 4, "mode_inputs": 3, "mode_samples": 20, "ged_samples": 10,
           "annotator_samples": [16, 100], "calibration_samples": 4},
    "cpu": {"tasks": [2, 4, 8], "seeds": [0, 1], "train": 2000, "test": 200, "steps": 1500,
            "batch": 16, "is": 100, "mc": 200, "mode_inputs": 50, "mode_samples": 1000,
            "ged_samples": 100, "annotator_samples": [16, 100], "calibration_samples": 16},
    "gpu": {"tasks": [2, 4, 8], "seeds": [0, 1, 2], "train": 4000, "test": 500, "steps": 4000,
            "batch": 32, "is": 500, "mc": 2000, "mode_inputs": 500, "mode_samples": 1000,
            "ged_samples": 200, "annotator_samples": [16, 100], "calibration_samples": 16},
}  # fmt: skip


# ----------------------------------------------------------------------------- runs
class _Model(NamedTuple):
    """One model of the table: its name, its head, its config and its objective override."""

    name: str
    head: str
    config: Path
    objective: str | None


def _models(args: argparse.Namespace) -> list[_Model]:
    """The CVAE head once per --objectives, each other head once, then each --recipes."""
    models = []
    for head in args.heads:
        if head == "cvae":
            models += [_Model(o, "cvae", args.config, o) for o in args.objectives]
        else:
            models.append(_Model(head, head, ROOT / "configs" / f"known_truth_{head}.yaml", None))
    for recipe in args.recipes:
        name, _, path = recipe.partition("=")
        models.append(_Model(name, load_config(Path(path)).model.head, Path(path), None))
    return models


def _config(args: argparse.Namespace, budget: dict, k: int, model: _Model, seed: int) -> Config:
    """A model's run config: its file with the task, budget and seed set."""
    overrides = []
    if model.objective is not None:
        overrides.append(f"model.objective={model.objective}")
        # a mixture prior learns only through a KL term: objectives without one keep a Gaussian
        if not get_objective(model.objective).needs_recognition:
            overrides.append("model.prior_components=1")
    return load_config(
        model.config,
        [
            f"data.known_truth_modes={list(default_mode_probs(k))}",
            f"data.shapes_train={budget['train']}",
            f"data.shapes_val={budget['test']}",
            f"data.batch_size={budget['batch']}",
            f"data.known_truth_holdout={args.holdout}",
            f"data.known_truth_annotators={args.annotators}",
            f"train.max_steps={budget['steps']}",
            f"train.eval_interval={budget['steps']}",
            f"train.seed={seed}",
            f"train.checkpoint_interval={CHECKPOINT_INTERVAL}",
            *overrides,
            *args.extra,
        ],
    )


@torch.no_grad()
def diagnose_run(
    model, config: Config, budget: dict, device: torch.device, split: str = "val"
) -> dict:
    """Where a CVAE's excess NLL sits: per true shape, and visible vs occluded pixels.

    On ``split`` (the validation split unless told). Per shape k: the importance-sampled NLL
    of its pairs beside -log pi_k, and the
    `cvae_seg.metrics.ModeDecomposition` of the prior's samples (mass, sharpness, Monte Carlo
    p). At q's mean: the summed cross-entropy on the visible and on the occluded pixels. The
    prior's std per latent channel and a mixture's weights (`cvae_seg.metrics.prior_scale_summary`).
    """
    truth, x, y = evaluation_set(config, split)
    x, y = x.to(device), y.to(device)
    ll = _batched(
        lambda a, b: model.log_likelihood(a, b, budget["is"], "importance", min(budget["is"], 100)),
        x, y, size=50,
    )  # fmt: skip
    model.eval()
    logits = _batched(
        lambda a, b: model.decode(model.encode(a), model.posterior(a, b).mean[None])[0],
        x, y, size=50,
    )  # fmt: skip
    hidden = torch.from_numpy(truth.hidden).to(device)
    modes = torch.from_numpy(truth.modes).to(device)
    per_mode = []
    for k, pi in enumerate(truth.probs):
        chosen = modes == k
        per_mode.append({"pi": float(pi), "true_nll": -math.log(pi),
                         "nll_importance": float(-ll[chosen].mean()) if chosen.any() else None,
                         "pairs": int(chosen.sum())})  # fmt: skip
    count = budget["mode_inputs"]
    decomposition = prior_decomposition(
        model, x[:count], truth.candidates[:count], budget["mode_samples"]
    )
    for k, row in enumerate(per_mode):
        row.update(prior_mass=decomposition["mass"][k], sharpness=decomposition["sharpness"][k],
                   monte_carlo_p=decomposition["monte_carlo_p"][k])  # fmt: skip
    priors = [model.prior(x[i : i + 50]) for i in range(0, len(x), 50)]
    return {
        "per_mode": per_mode,
        "prior_samples_in_between": decomposition["in_between"],
        **metrics.prior_scale_summary(priors),
        "visible_nll_at_q_mean": float(masked_nll(logits, y, ~hidden).mean()),
        "occluded_nll_at_q_mean": float(masked_nll(logits, y, hidden).mean()),
    }


@torch.no_grad()
def prior_decomposition(
    model, x: torch.Tensor, candidates: np.ndarray, num_samples: int
) -> dict[str, list[float] | float]:
    """`cvae_seg.metrics.ModeDecomposition` of ``num_samples`` prior samples per input.

    x (N, 3, H, W), candidates (N, K, H, W); pooled over the N inputs.
    """
    decomposition = metrics.ModeDecomposition(candidates.shape[1])
    for i in range(len(x)):
        logits = model.sample(x[i : i + 1], num_samples)[:, 0]  # (S, C, H, W)
        labels = torch.from_numpy(candidates[i])
        decomposition.update(metrics.candidate_log_likelihoods(logits, labels))
    return decomposition.compute()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "known_truth.yaml",
        help="the CVAE head's config (default: the paper's ELBO; known_truth_iw.yaml: IW bound)",
    )  # fmt: skip
    parser.add_argument("--tasks", type=int, nargs="+", default=None, choices=[2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--objectives", nargs="*", default=list(OBJECTIVES), choices=OBJECTIVES,
                        help="the CVAE head's objectives (with cvae in --heads; none: only "
                        "--recipes and the other heads)")  # fmt: skip
    parser.add_argument(
        "--heads", nargs="+", default=["cvae"], choices=HEADS,
        help="cvae: --objectives from --config; a peer: configs/known_truth_<head>.yaml",
    )  # fmt: skip
    parser.add_argument(
        "--recipes", nargs="+", default=[], metavar="NAME=CONFIG",
        help="more models, each trained from its own config (e.g. ciwae=configs/known_truth_"
        "ciwae.yaml: the best CVAE recipe beside the paper's)",
    )  # fmt: skip
    parser.add_argument(
        "--split", choices=SPLITS, default="val",
        help="the split scored: val while choosing recipes; test once, for the final table",
    )  # fmt: skip
    parser.add_argument(
        "--holdout", type=float, default=0.0, metavar="F",
        help="share of the 336 layouts only the test split draws (data.known_truth_holdout)",
    )  # fmt: skip
    parser.add_argument(
        "--annotators", type=int, default=1, metavar="A",
        help="annotations per image (data.known_truth_annotators); > 1 adds GED, HM-IoU, NCC",
    )  # fmt: skip
    parser.add_argument(
        "--hit-distance", type=float, default=HIT_DISTANCE, metavar="PX",
        help=f"a sample within this many pixels of a candidate is a hit (default {HIT_DISTANCE})",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="updates (default: the budget's)")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/known_truth"))
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR",
        help="copy each finished run's small files (no checkpoints) to DIR/<budget>_<steps>steps, "
        "and take the runs kept there as finished (a study that outlives its machine)",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default results/known_truth_<budget> (ci: under --work-dir)",
    )
    parser.add_argument("--figure", type=Path, default=None, help="sample grid PNG (default: none)")
    parser.add_argument(
        "--reliability", type=Path, default=None, metavar="PNG",
        help="reliability diagrams of every model on the occluded pixels (default: none)",
    )  # fmt: skip
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--extra", nargs="*", default=[], help="config overrides for every model")
    parser.add_argument(
        "--diagnose", type=Path, default=None, metavar="CHECKPOINT",
        help="only print where a trained CVAE's excess NLL sits (per shape, visible/occluded)",
    )  # fmt: skip
    parser.add_argument(
        "--rescore", type=Path, default=None, metavar="RUNS",
        help="only score the finished runs under RUNS (a WORK/<budget>_<steps>steps folder) "
        "on --split (test2: new test pairs), into --out; their result.json stay as they are",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="REPORT",
        help="only merge these OUT.json reports (e.g. seeds run in parallel) into --out",
    )  # fmt: skip
    parser.add_argument(
        "--draw", type=Path, nargs="+", default=None, metavar="RUNS",
        help="only draw --figure and/or --reliability from saved runs: every model under these "
        "WORK/<budget>_"
        "<steps>steps folders or work dirs (each model's lowest seed; --tasks filters)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.merge is not None:
        if args.out is None:
            parser.error("--merge needs --out")
        report = merge_reports(args.merge)
        write_report(report, args.out)
        return report
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = dict(BUDGETS[args.budget])
    if args.draw is not None:
        if args.figure is None and args.reliability is None:
            parser.error("--draw needs --figure, --reliability or both")
        absent = [str(folder) for folder in args.draw if not folder.is_dir()]
        models = saved_models(args.draw, args.tasks) if not absent else {}
        if not models:
            parser.error(f"--draw {' '.join(absent or map(str, args.draw))}: expected folders "
                         "holding K<k>/<model>/seed<n>/best.pt, or work dirs of them (with "
                         "--tasks, of those tasks)")  # fmt: skip
        try:
            return _save_figures(args, models)
        except NoKeptDiagram as error:
            parser.error(f"--reliability {args.reliability}: {error}")
    if args.rescore is not None:
        return _rescore(parser, args, budget, argv)
    if args.diagnose is not None:
        device = select_device(args.device)
        model, config, _ = load_trained(args.diagnose, device)
        torch.manual_seed(0)
        result = diagnose_run(model, config, budget, device, args.split)
        print(json.dumps(result, indent=2))
        return result
    if not 0 <= args.holdout < 1 or args.annotators < 1 or args.hit_distance < 0:
        parser.error("--holdout takes 0 <= F < 1, --annotators A >= 1, --hit-distance >= 0")
    for recipe in args.recipes:
        name, _, path = recipe.partition("=")
        if not name or name in MODELS or not Path(path).is_file():
            parser.error(f"--recipes {recipe}: expected NAME=CONFIG with a new name and a file")
    if args.out is None:
        args.out = (args.work_dir if args.budget == "ci" else Path("results")) / (
            f"known_truth_{args.budget}"
        )
    results = (ROOT / "results").resolve()
    if args.budget == "ci" and results in [args.out.resolve(), *args.out.resolve().parents]:
        parser.error("a ci run writes nothing into results/: give --out outside it")
    if args.steps is not None:
        budget["steps"] = args.steps
    try:
        return run_benchmark(args, budget, argv)
    except (OtherSettings, KeptFileError) as error:
        parser.error(str(error))
    except NoKeptDiagram as error:  # every run restored from files kept before the diagram
        parser.error(f"--reliability {args.reliability}: {error}")


def _rescore(parser: argparse.ArgumentParser, args: argparse.Namespace, budget: dict,
             argv: list[str] | None) -> dict:  # fmt: skip
    """--rescore: every finished run under RUNS scored on --split, reported to --out."""
    if args.out is None or not args.rescore.is_dir():
        parser.error(f"--rescore {args.rescore}: expected a folder of K<k>/<model>/seed<n> runs "
                     "and --out")  # fmt: skip
    device = select_device(args.device)
    header = _report_header(args, budget, argv, device, args.tasks or budget["tasks"], [])
    report = rescore_runs(args.rescore, header, _scoring(args, budget), budget, device, args.tasks)
    if not report["runs"]:
        parser.error(f"--rescore {args.rescore}: no finished run with a best.pt there")
    report["seeds"] = sorted({row["seed"] for row in report["runs"]})
    configs = {(row["k"], row["objective"], row["seed"]): load_config(
        args.rescore / f"K{row['k']}" / row["objective"] / f"seed{row['seed']}" / "config.yaml"
    ) for row in report["runs"]}  # fmt: skip
    report["ece_occluded_floor"] = _ece_floors(configs, args.split, budget["calibration_samples"])
    write_report(report, args.out)
    print(markdown(report))
    return report


def _report_header(args: argparse.Namespace, budget: dict, argv: list[str] | None,
                   device: torch.device, tasks: list[int], seeds: list[int]) -> dict:  # fmt: skip
    """The report's settings and protocol, before any run."""
    return {
        "command": shlex.join(["python", "benchmarks/known_truth.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "budget": args.budget,
        "budget_settings": budget,
        "tasks": tasks,
        "seeds": seeds,
        "split": args.split,
        "holdout": args.holdout,
        "annotators": args.annotators,
        "hit_distance": args.hit_distance,
        "nll_protocol": NLL_PROTOCOL,
        "ged_convention": GED_CONVENTION,
        "runs": [],
    }


def run_benchmark(args: argparse.Namespace, budget: dict, argv: list[str] | None) -> dict:
    """Train and evaluate every (K, model, seed) not yet finished (`known_truth_runs`: kept,
    resumed, shared by processes running the same command); OUT.json and OUT.md after each."""
    tasks = args.tasks or budget["tasks"]
    seeds = args.seeds if args.seeds is not None else budget["seeds"]
    device = select_device(args.device)
    report = _report_header(args, budget, argv, device, tasks, seeds)
    runs_dir = args.work_dir / f"{args.budget}_{budget['steps']}steps"
    plan = [(k, spec, seed) for k in tasks for spec in _models(args) for seed in seeds]
    configs = {(k, spec.name, seed): _config(args, budget, k, spec, seed) for k, spec, seed in plan}
    scoring = _scoring(args, budget)
    report["ece_occluded_floor"] = _ece_floors(configs, args.split, budget["calibration_samples"])
    names = [f"K{k}/{name}/seed{seed}" for k, name, seed in configs]
    kept = None if args.keep is None else args.keep / runs_dir.name
    for folder in [runs_dir] if kept is None else [kept, runs_dir]:  # before any training
        for name, config in zip(names, configs.values(), strict=True):
            check_same_config(folder / name, config)
            check_same_scoring(folder / name, scoring)
    if kept is not None:
        for run_dir in restore(kept, runs_dir, names):
            print(f"{run_dir}: restored from {kept}", flush=True)
    for k, spec, seed in plan:
        run_dir = runs_dir / f"K{k}" / spec.name / f"seed{seed}"
        if finished(run_dir) is not None:
            continue
        with claimed(run_dir) as lock:
            if lock is None or finished(run_dir) is not None:
                continue  # another process holds it, or has just finished it
            config = configs[k, spec.name, seed]
            row = _train_and_score(args, budget, config, k, spec, seed, run_dir, device)
            if kept is not None:
                keep(run_dir, kept / run_dir.relative_to(runs_dir))
        print(k, spec.name, seed, row["seconds"], "s", row.get("failed") or _brief(row["test"]),
              flush=True)  # fmt: skip
        write_report(_gathered(report, runs_dir, plan), args.out)
    report = _gathered(report, runs_dir, plan)
    write_report(report, args.out)
    if (args.figure or args.reliability) and seeds and not report["unfinished"]:
        names = [model.name for model in _models(args)]
        _save_figures(args, saved_models([runs_dir], tasks, names, min(seeds)))
    print(markdown(report))
    return report


def _ece_floors(configs: dict[tuple[int, str, int], Config], split: str,
                samples: int) -> dict[str, float]:  # fmt: skip
    """Per K, the occluded-pixel ECE of a perfect sampler averaging as many samples as the
    models do (`known_truth_ece_floor.task_floor`): the task sets it, not the model."""
    tasks: dict[int, Config] = {}
    for (k, _, _), config in configs.items():
        tasks.setdefault(k, config)  # every model of a task shares its data settings
    return {str(k): task_floor(config, split, samples) for k, config in sorted(tasks.items())}


def _train_and_score(
    args: argparse.Namespace,
    budget: dict,
    config: Config,
    k: int,
    spec: _Model,
    seed: int,
    run_dir: Path,
    device: torch.device,
) -> dict:
    """One run trained (or resumed) and scored; its report row."""

    def score() -> dict:
        model, _, _ = load_trained(run_dir / "best.pt", device)
        torch.manual_seed(seed)
        scores = evaluate_run(model, config, budget, device, args.split, args.hit_distance)
        columns = figure_columns(args.tasks or budget["tasks"])
        save_figure_samples(model, config, run_dir, args.split, columns, device)
        return scores

    identity = {"k": k, "objective": spec.name, "head": spec.head, "seed": seed,
                "scoring": _scoring(args, budget)}  # fmt: skip
    return train_and_score(run_dir, config, identity, score, str(device))


# the budget's settings that decide how a trained model is scored (not how it is trained)
SCORING_KEYS = ("test", "is", "mc", "mode_inputs", "mode_samples", "ged_samples",
                "annotator_samples", "calibration_samples")  # fmt: skip


def _scoring(args: argparse.Namespace, budget: dict) -> dict:
    """How this command scores a run: kept with each result, and checked against it."""
    return {"split": args.split, "hit_distance": args.hit_distance,
            **{key: budget[key] for key in SCORING_KEYS}}  # fmt: skip


def _gathered(report: dict, runs_dir: Path, plan: list[tuple[int, _Model, int]]) -> dict:
    """The report with every finished run of the plan (in its order), whoever trained it;
    the failed and the unfinished listed apart; seconds: every finished run's, summed."""
    rows, failed, unfinished = [], [], []
    for k, spec, seed in plan:
        row = finished(runs_dir / f"K{k}" / spec.name / f"seed{seed}")
        name = f"K={k} {spec.name} seed {seed}"
        if row is None:
            unfinished.append(name)
        elif "failed" in row:
            failed.append({"run": name, "error": row["failed"], "seconds": row["seconds"]})
        else:
            rows.append(row)
    seconds = round(sum(row["seconds"] for row in [*rows, *failed]), 1)
    return {**report, "runs": rows, "failed": failed, "unfinished": unfinished,
            "seconds": seconds}  # fmt: skip


def _save_figures(args: argparse.Namespace, models: dict) -> dict:
    """Draw ``models`` (from `saved_models`) to --figure and --reliability (those given);
    their paths and the labels each shows per K."""
    drawn = {}
    if args.figure is not None:
        figure = sample_figure(models, select_device(args.device), split=args.split)
        atomic_save_image(args.figure, figure)
        labels = {k: [model.label for model in entries] for k, entries in models.items()}
        print(f"{args.figure}: {labels}", flush=True)
        drawn.update({"figure": str(args.figure), "models": labels})
    if args.reliability is not None:
        picture, shown = reliability_figure(models)
        atomic_save_image(args.reliability, picture)
        print(f"{args.reliability}: {shown}", flush=True)
        drawn.update({"reliability": str(args.reliability), "reliability_models": shown})
    return drawn


def _brief(test: dict) -> dict:
    keys = ("nll", "nll_monte_carlo", "true_nll", "nll_ratio", "tv_mean", "tv_floor_mean",
            "ged", "ged_16", "hm_iou_16", "ece", "visible_accuracy", "kl")  # fmt: skip
    return {key: round(test[key], 3) for key in keys if key in test}


if __name__ == "__main__":
    main()
