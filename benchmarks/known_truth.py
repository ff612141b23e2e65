"""The five objectives on a task whose true p(y|x) is known exactly.

    python benchmarks/known_truth.py [--budget ci|cpu|gpu] [--tasks 2 4 8] [--seeds 0 1]
        [--config configs/known_truth_iw.yaml] [--steps N]
        [--work-dir work_dirs/known_truth] [--out results/known_truth_<budget>]
        [--figure FIGURE.png] [--merge A.json B.json --out OUT] [--diagnose CHECKPOINT]
        [--draw CVAE_RUNS CNN_RUNS --figure FIGURE.png]

A box's part behind an occluder is one of K shapes with unequal, known probabilities
(`cvae_seg.data.known_truth`), so log p(y|x) of every test pair, the conditional entropy H
and the mode frequencies are exact. For K in --tasks, every objective is trained per seed
from --config (configs/known_truth.yaml: the paper's ELBO; configs/known_truth_iw.yaml: the
importance-weighted bound with a KL warm-up) and evaluated on the test split:

- NLL, nats per image: importance sampling (cvae, hybrid) and Monte Carlo (gsnn, cvae,
  hybrid), exact for cnn/gdnn, beside the true NLL of the same pairs (whose mean is about H).
- Mode frequencies: each of S samples per input (argmax map) goes to the nearest candidate in
  Hamming distance, or to a "miss" bin when it differs from it on more than MISS_FRACTION of
  the occluded pixels; total variation to (pi, 0) per input (mean) and pooled over inputs
  (`cvae_seg.metrics.mode_counts`, `cvae_seg.metrics.total_variation`).
- GED, D^2 with d = 1 - IoU of the foreground (`cvae_seg.metrics.generalized_energy_distance`,
  every ordered pair, self-pairs included): the truth's expectations exact over the
  candidates weighted by pi, the first GED_SAMPLES samples per input from the model. Reports
  written before 1.0 (no ``ged_convention`` key) left the self-pairs out of E d(s, s').
- Pixel accuracy of predict() on the visible pixels, and KL(q||p) with its share of the
  negative ELBO on the test pairs (posterior collapse shows as a KL near 0).

Writes OUT.json and OUT.md after every run (mean and standard error over seeds) and a sample
grid of the first seed's CVAE and CNN. Budgets (`BUDGETS`): ``ci`` (a few updates, for the
tests), ``cpu`` (1,500 updates, two seeds, for 2 CPU cores with --threads 1) and ``gpu``
(4,000 updates, three seeds, more samples). ``--steps`` overrides the budget's updates (runs
go to WORK/<budget>_<steps>steps). ``--merge A.json B.json --out OUT`` joins reports of seeds
run as separate jobs into one table; ``--diagnose`` prints where a trained CVAE's excess NLL
sits; ``--draw`` redraws the sample grid from saved runs. docs/benchmarks/known_truth.md
holds the measured tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from known_truth_report import (  # noqa: E402
    ESTIMATORS,
    GED_CONVENTION,
    MISS_FRACTION,
    OBJECTIVES,
    markdown,
    merge_reports,
    tightest_nll,
    write_report,
)

from cvae_seg import metrics  # noqa: E402
from cvae_seg.config import Config, load_config  # noqa: E402
from cvae_seg.data.common import build_transform  # noqa: E402
from cvae_seg.data.known_truth import (  # noqa: E402
    KnownTruthSet,
    default_mode_probs,
    known_truth_split,
    true_log_likelihood,
)
from cvae_seg.likelihood import masked_nll  # noqa: E402
from cvae_seg.objectives import get_objective  # noqa: E402
from cvae_seg.reporting import atomic_save_image, describe_hardware  # noqa: E402
from cvae_seg.training import load_trained, select_device, train  # noqa: E402

_HIDDEN = 255  # the label that marks the occluded pixels out of the visible accuracy
BUDGETS = {
    "ci": {"tasks": [2], "seeds": [0], "train": 16, "test": 6, "steps": 2, "batch": 4,
           "is": 4, "mc": 4, "mode_inputs": 3, "mode_samples": 20, "ged_samples": 10},
    "cpu": {"tasks": [2, 4, 8], "seeds": [0, 1], "train": 2000, "test": 200, "steps": 1500,
            "batch": 16, "is": 100, "mc": 200, "mode_inputs": 50, "mode_samples": 1000,
            "ged_samples": 100},
    "gpu": {"tasks": [2, 4, 8], "seeds": [0, 1, 2], "train": 4000, "test": 500, "steps": 4000,
            "batch": 32, "is": 500, "mc": 2000, "mode_inputs": 500, "mode_samples": 1000,
            "ged_samples": 200},
}  # fmt: skip


# ----------------------------------------------------------------------------- runs
def _config(args: argparse.Namespace, budget: dict, k: int, objective: str, seed: int) -> Config:
    probs = list(default_mode_probs(k))
    # a mixture prior learns only through a KL term: objectives without one keep the Gaussian
    has_kl = get_objective(objective).needs_recognition
    own_prior = [] if has_kl else ["model.prior_components=1"]
    return load_config(
        args.config,
        [
            f"model.objective={objective}",
            f"data.known_truth_modes={probs}",
            f"data.shapes_train={budget['train']}",
            f"data.shapes_val={budget['test']}",
            f"data.batch_size={budget['batch']}",
            f"train.max_steps={budget['steps']}",
            f"train.eval_interval={budget['steps']}",
            f"train.seed={seed}",
            *own_prior,
            *args.extra,
        ],
    )


def _test_set(config: Config) -> tuple[KnownTruthSet, torch.Tensor, torch.Tensor]:
    """The test split with its candidates (as `cvae_seg.data` seeds it), normalised."""
    data = config.data
    truth = known_truth_split(
        "test", data.shapes_val, data.size, data.known_truth_modes, data.split_seed
    )
    transform = build_transform(False, False, 0.0, data.mean, data.std)
    x = torch.stack([transform(image=i)["image"] for i in truth.arrays.images])
    return truth, x, torch.from_numpy(truth.arrays.labels).long()


def _batched(function, *tensors: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat(
        [function(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)]
    )


def _nll_estimates(model, x: torch.Tensor, y: torch.Tensor, objective: str, budget: dict) -> dict:
    """``nll_<method>`` for each of the objective's estimators, nats per image."""
    result = {}
    for method in ESTIMATORS[objective]:
        samples = {"exact": 1, "importance": budget["is"], "monte_carlo": budget["mc"]}[method]
        ll = _batched(
            lambda a, b, m=method, s=samples: model.log_likelihood(
                a, b, s, method="auto" if m == "exact" else m, chunk_size=min(s, 100)
            ),
            x,
            y,
            size=50,
        )
        result[f"nll_{method}"] = float(-ll.double().mean())
    return result


def _sample_metrics(model, x: torch.Tensor, truth: KnownTruthSet, budget: dict) -> dict:
    """Mode frequencies, TV and GED from the samples of the first test inputs."""
    counts, tvs, geds = 0, [], []
    max_distance = MISS_FRACTION * int(truth.hidden[0].sum())
    for i in range(min(budget["mode_inputs"], len(x))):
        samples = model.sample(x[i : i + 1], budget["mode_samples"])[:, 0].argmax(1)
        candidates = torch.from_numpy(truth.candidates[i]).long().to(samples.device)
        hits = metrics.mode_counts(samples, candidates, max_distance).cpu().numpy()
        counts = counts + hits
        tvs.append(metrics.total_variation(hits, truth.probs))
        ged = metrics.generalized_energy_distance(
            samples[: budget["ged_samples"], None],
            candidates[:, None],
            num_classes=2,
            reference_weights=torch.from_numpy(truth.probs),
        )
        geds.append(float(ged))
    return {
        "tv_mean": float(np.mean(tvs)),
        "tv_pooled": metrics.total_variation(counts, truth.probs),
        "frequencies": (counts / counts.sum()).tolist(),
        "ged": float(np.mean(geds)),
    }


@torch.no_grad()
def evaluate_run(model, config: Config, budget: dict, device: torch.device) -> dict:
    """Every number of the table for one trained model."""
    truth, x, y = _test_set(config)
    x, y = x.to(device), y.to(device)
    objective = config.model.objective
    true_nll = -true_log_likelihood(truth.arrays.labels, truth.candidates, truth.probs)
    result = {"true_nll": float(true_nll.mean()), "entropy": truth.entropy}
    result.update(_nll_estimates(model, x, y, objective, budget))
    result["nll_ratio"] = tightest_nll(result, objective) / result["true_nll"]

    prediction = _batched(lambda a: model.predict(a).argmax(1), x, size=100)
    hidden = torch.from_numpy(truth.hidden).to(device)
    visible_only = y.masked_fill(hidden, _HIDDEN)
    accuracy = metrics.pixel_accuracy(prediction, visible_only, ignore_index=_HIDDEN)
    result["visible_accuracy"] = 100 * float(accuracy)
    result.update(_sample_metrics(model, x, truth, budget))
    if model.recognition_net is not None:  # the ELBO's parts on the test pairs
        model.eval()
        terms = _batched(lambda a, b: _elbo_terms(model, a, b), x, y, size=50)
        kl, reconstruction = terms.mean(0).tolist()
        result.update(kl=kl, reconstruction=reconstruction, kl_share=kl / (kl + reconstruction))
    return result


@torch.no_grad()
def diagnose_run(model, config: Config, budget: dict, device: torch.device) -> dict:
    """Where a CVAE's excess NLL sits: per true shape, and visible vs occluded pixels.

    Per shape k: the importance-sampled NLL of its test pairs beside -log pi_k, and the
    `cvae_seg.metrics.ModeDecomposition` of the prior's samples (mass, sharpness, Monte Carlo
    p). At q's mean: the summed cross-entropy on the visible and on the occluded pixels. The
    prior's std per latent channel and a mixture's weights (`cvae_seg.metrics.prior_scale_summary`).
    """
    truth, x, y = _test_set(config)
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


def _elbo_terms(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, 2): KL(q||p) and -log p(y|x,z) with z ~ q, nats per image, from the loss."""
    out = model.loss(x, y)
    pixels = y[0].numel()
    row = torch.stack([out.terms["kl"], out.terms["nll_posterior"] * pixels])
    return row[None].expand(len(x), 2)


# ------------------------------------------------------------------------- figure
def sample_figure(
    cvae_runs: Path, cnn_runs: Path, tasks: list[int], device: torch.device, num_samples: int = 6
):
    """One row per task: input, the K truths with their probabilities, CVAE samples, CNN.

    The seed-0 checkpoints come from ``<runs>/K<k>/<objective>/seed0/best.pt``, so the CVAE of
    one recipe can be drawn beside the CNN of another run (``--draw``).
    """
    from PIL import Image, ImageDraw

    from cvae_seg.visualization import colorize

    scale, rows = 3, []
    for k in tasks:
        cvae, config, _ = load_trained(cvae_runs / f"K{k}" / "cvae" / "seed0" / "best.pt", device)
        cnn, _, _ = load_trained(cnn_runs / f"K{k}" / "cnn" / "seed0" / "best.pt", device)
        truth, x, _ = _test_set(config)
        torch.manual_seed(0)
        samples = cvae.sample(x[:1].to(device), num_samples)[:, 0].argmax(1).cpu().numpy()
        tiles = [("input", truth.arrays.images[0])]
        tiles += [
            (f"p={p:.2f}", colorize(c))
            for p, c in zip(truth.probs, truth.candidates[0], strict=True)
        ]
        tiles += [(f"CVAE {i + 1}", colorize(s)) for i, s in enumerate(samples)]
        tiles.append(("CNN", colorize(cnn.predict(x[:1].to(device))[0].argmax(0).cpu().numpy())))
        rows.append(tiles)
    side = rows[0][0][1].shape[0] * scale + 4
    width = max(len(r) for r in rows) * side
    canvas = Image.new("RGB", (width + 40, len(rows) * (side + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, tiles in enumerate(rows):
        top = r * (side + 14)
        draw.text((2, top + side // 2), f"K={tasks[r]}", fill="black")
        for c, (caption, tile) in enumerate(tiles):
            picture = Image.fromarray(tile).resize((side - 4, side - 4), Image.Resampling.NEAREST)
            canvas.paste(picture, (40 + c * side, top + 12))
            draw.text((40 + c * side, top), caption, fill="black")
    return canvas


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "known_truth.yaml",
        help="the task's config (default: the paper's ELBO; known_truth_iw.yaml: the IW bound)",
    )  # fmt: skip
    parser.add_argument("--tasks", type=int, nargs="+", default=None, choices=[2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--steps", type=int, default=None, help="updates (default: the budget's)")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/known_truth"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="sample grid PNG (default: none)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--extra", nargs="*", default=[], help="more config overrides")
    parser.add_argument(
        "--diagnose", type=Path, default=None, metavar="CHECKPOINT",
        help="only print where a trained CVAE's excess NLL sits (per shape, visible/occluded)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="REPORT",
        help="only merge these OUT.json reports (e.g. seeds run in parallel) into --out",
    )  # fmt: skip
    parser.add_argument(
        "--draw", type=Path, nargs=2, default=None, metavar=("CVAE_RUNS", "CNN_RUNS"),
        help="only draw --figure from trained runs (WORK/<budget>_<steps>steps folders)",
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
        if args.figure is None:
            parser.error("--draw needs --figure")
        _save_figure(args.figure, *args.draw, args.tasks or budget["tasks"], args.device)
        return {}
    if args.diagnose is not None:
        device = select_device(args.device)
        model, config, _ = load_trained(args.diagnose, device)
        torch.manual_seed(0)
        result = diagnose_run(model, config, budget, device)
        print(json.dumps(result, indent=2))
        return result
    if args.steps is not None:
        budget["steps"] = args.steps
    return run_benchmark(args, budget, argv)


def run_benchmark(args: argparse.Namespace, budget: dict, argv: list[str] | None) -> dict:
    """Train and evaluate every (K, objective, seed); OUT.json and OUT.md after each run."""
    tasks = args.tasks or budget["tasks"]
    seeds = args.seeds if args.seeds is not None else budget["seeds"]
    out = args.out or Path("results") / f"known_truth_{args.budget}"
    device = select_device(args.device)
    started = time.perf_counter()
    report = {
        "command": shlex.join(["python", "benchmarks/known_truth.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "budget": args.budget,
        "budget_settings": budget,
        "tasks": tasks,
        "seeds": seeds,
        "miss_fraction": MISS_FRACTION,
        "ged_convention": GED_CONVENTION,
        "runs": [],
    }
    runs_dir = args.work_dir / f"{args.budget}_{budget['steps']}steps"
    for k in tasks:
        for objective in args.objectives:
            for seed in seeds:
                config = _config(args, budget, k, objective, seed)
                run_dir = runs_dir / f"K{k}" / objective / f"seed{seed}"
                run_started = time.perf_counter()
                train(config, run_dir, device=str(device), progress=False)
                model, _, _ = load_trained(run_dir / "best.pt", device)
                torch.manual_seed(seed)
                test = evaluate_run(model, config, budget, device)
                run = {"k": k, "objective": objective, "seed": seed, "test": test,
                       "seconds": round(time.perf_counter() - run_started, 1)}  # fmt: skip
                report["runs"].append(run)
                report["seconds"] = round(time.perf_counter() - started, 1)
                print(k, objective, seed, run["seconds"], "s", _brief(test), flush=True)
                write_report(report, out)
    if args.figure is not None and {"cvae", "cnn"} <= set(args.objectives) and 0 in seeds:
        _save_figure(args.figure, runs_dir, runs_dir, tasks, args.device)
    print(markdown(report))
    return report


def _save_figure(
    path: Path, cvae_runs: Path, cnn_runs: Path, tasks: list[int], device: str | None
) -> None:
    atomic_save_image(path, sample_figure(cvae_runs, cnn_runs, tasks, select_device(device)))


def _brief(test: dict) -> dict:
    keys = ("nll_exact", "nll_importance", "nll_monte_carlo", "true_nll", "tv_mean", "ged",
            "visible_accuracy", "kl")  # fmt: skip
    return {key: round(test[key], 3) for key in keys if key in test}


if __name__ == "__main__":
    main()
