"""The five objectives on a task whose true p(y|x) is known exactly (issue #7, part 3).

    python benchmarks/known_truth.py [--budget ci|cpu|gpu] [--tasks 2 4 8] [--seeds 0 1]
        [--config configs/known_truth_iw.yaml] [--steps N]
        [--work-dir work_dirs/known_truth] [--out results/known_truth_<budget>]
        [--figure docs/known_truth_samples.png]

A box's part behind an occluder is one of K shapes with unequal, known probabilities
(`cvae_seg.data.known_truth`), so log p(y|x) of every test pair, the conditional entropy H
and the mode frequencies are exact. For K in --tasks, every objective is trained per seed
from --config (configs/known_truth.yaml: the paper's ELBO; configs/known_truth_iw.yaml: the
importance-weighted bound with a KL warm-up) and evaluated on the test split:

- NLL, nats per image: importance sampling (cvae, hybrid) and Monte Carlo (gsnn, cvae,
  hybrid), exact for cnn/gdnn, beside the true NLL of the same pairs (whose mean is about H).
- Mode frequencies: each of S samples per input (argmax map) goes to the nearest candidate in
  Hamming distance, or to a "miss" bin when it differs from it on more than MISS_FRACTION of
  the occluded pixels; total variation to (pi, 0) per input (mean) and pooled over inputs.
- GED (1 - IoU of the foreground): exact expectations over the true candidates, the first
  GED_SAMPLES samples per input from the model.
- Pixel accuracy of predict() on the visible pixels, and KL(q||p) with its share of the
  negative ELBO on the test pairs (posterior collapse shows as a KL near 0).

Writes OUT.json and OUT.md after every run (mean and standard error over seeds) and a sample
grid of the first seed's CVAE and CNN. Budgets: ``ci`` (seconds, for the tests), ``cpu`` (the
README's table: 30 runs of 1,500 updates, 44 minutes on 2 CPU cores with --threads 1),
``gpu`` (4,000 updates, three seeds, more samples; untested so far). ``--steps`` overrides
the budget's updates (runs go to WORK/<budget>_<steps>steps). ``--merge A.json B.json --out
OUT`` joins reports of seeds run as separate jobs into one table.
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
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import Config, load_config  # noqa: E402
from cvae_seg.data.common import build_transform  # noqa: E402
from cvae_seg.data.known_truth import (  # noqa: E402
    KnownTruthSet,
    default_mode_probs,
    make_known_truth,
    true_log_likelihood,
)
from cvae_seg.engine import load_trained, select_device, train  # noqa: E402
from cvae_seg.latent import GaussianMixture  # noqa: E402
from cvae_seg.metrics import pairwise_iou_distance  # noqa: E402
from cvae_seg.objectives import get_objective  # noqa: E402
from cvae_seg.reporting import (  # noqa: E402
    atomic_save_image,
    atomic_write_text,
    describe_hardware,
    mean_stderr,
)

OBJECTIVES = ("cnn", "gdnn", "gsnn", "cvae", "hybrid")
ESTIMATORS = {
    "cnn": ("exact",),
    "gdnn": ("exact",),
    "gsnn": ("monte_carlo",),
    "cvae": ("importance", "monte_carlo"),
    "hybrid": ("importance", "monte_carlo"),
}
MISS_FRACTION = 0.1  # a sample farther than this share of the occluded pixels is a miss
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


# ------------------------------------------------------------------ distribution metrics
def mode_counts(
    samples: torch.Tensor, candidates: torch.Tensor, num_hidden: int, miss_fraction: float
) -> torch.Tensor:
    """Hits per candidate plus a last "miss" bin: samples (S, H, W), candidates (K, H, W).

    Each sample counts for its nearest candidate (Hamming distance; ties to the lower index),
    or as a miss when that distance exceeds ``miss_fraction * num_hidden`` pixels.
    """
    distance = (samples[:, None] != candidates[None]).flatten(2).sum(-1)  # (S, K)
    nearest, best = distance.argmin(1), distance.min(1).values
    nearest[best > miss_fraction * num_hidden] = candidates.shape[0]
    return torch.bincount(nearest, minlength=candidates.shape[0] + 1)


def total_variation(counts: torch.Tensor | np.ndarray, probs: np.ndarray) -> float:
    """0.5 sum |f - pi| between hit frequencies (K + miss bin) and the truth (pi, 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    truth = np.append(np.asarray(probs, dtype=np.float64), 0.0)
    return float(0.5 * np.abs(counts / counts.sum() - truth).sum())


def iou_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - IoU between the foregrounds of binary maps a (n, H, W) and b (m, H, W): (n, m).

    Two empty maps are at distance 0 (`cvae_seg.metrics.pairwise_iou_distance`, one image).
    """
    return pairwise_iou_distance(a[:, None], b[:, None], num_classes=2)[..., 0].double()


def generalized_energy_distance(
    samples: torch.Tensor, candidates: torch.Tensor, probs: np.ndarray
) -> float:
    """GED^2 = 2 E d(s, y) - E d(s, s') - E d(y, y'), y exact over the weighted candidates.

    samples (S, H, W) from the model (S >= 2; pairs s != s' drawn without replacement),
    candidates (K, H, W) with probabilities ``probs``.
    """
    pi = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    cross = (iou_distance(samples, candidates) @ pi).mean()
    among = iou_distance(samples, samples)
    n = samples.shape[0]
    within_samples = among.sum() / (n * (n - 1))
    within_truth = pi @ iou_distance(candidates, candidates) @ pi
    return float(2 * cross - within_samples - within_truth)


def tightest_nll(result: dict, objective: str) -> float:
    """The lowest of an objective's NLL estimates in ``result`` (keys ``nll_<method>``).

    The sampling estimates are upper bounds on the model's NLL in expectation (Jensen), so the
    lower one is the tighter: importance sampling while q is informative, Monte Carlo once q
    has fallen onto the prior and proposes worse than the prior itself.
    """
    return min(result[f"nll_{method}"] for method in ESTIMATORS[objective])


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
    truth = make_known_truth(
        data.shapes_val, data.size, data.known_truth_modes, 2 + 1000 * data.split_seed
    )
    transform = build_transform(False, False, 0.0, data.mean, data.std)
    x = torch.stack([transform(image=i)["image"] for i in truth.arrays.images])
    return truth, x, torch.from_numpy(truth.arrays.labels).long()


def _batched(function, *tensors: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat(
        [function(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)]
    )


@torch.no_grad()
def evaluate_run(model, config: Config, budget: dict, device: torch.device) -> dict:
    """Every number of the table for one trained model."""
    truth, x, y = _test_set(config)
    x, y = x.to(device), y.to(device)
    objective = config.model.objective
    true_nll = -true_log_likelihood(truth.arrays.labels, truth.candidates, truth.probs)
    result = {"true_nll": float(true_nll.mean()), "entropy": truth.entropy}

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
    result["nll_ratio"] = tightest_nll(result, objective) / result["true_nll"]

    prediction = _batched(lambda a: model.predict(a).argmax(1), x, size=100)
    visible = ~torch.from_numpy(truth.hidden).to(device)
    result["visible_accuracy"] = 100 * float((prediction == y)[visible].float().mean())

    counts, tvs, geds = 0, [], []
    num_hidden = int(truth.hidden[0].sum())
    for i in range(min(budget["mode_inputs"], len(x))):
        samples = model.sample(x[i : i + 1], budget["mode_samples"])[:, 0].argmax(1)
        candidates = torch.from_numpy(truth.candidates[i]).long().to(device)
        hits = mode_counts(samples, candidates, num_hidden, MISS_FRACTION)
        counts = counts + hits.cpu().numpy()
        tvs.append(total_variation(hits.cpu(), truth.probs))
        geds.append(
            generalized_energy_distance(samples[: budget["ged_samples"]], candidates, truth.probs)
        )
    result.update(
        tv_mean=float(np.mean(tvs)),
        tv_pooled=total_variation(counts, truth.probs),
        frequencies=(counts / counts.sum()).tolist(),
        ged=float(np.mean(geds)),
    )
    if model.recognition_net is not None:  # the ELBO's parts on the test pairs
        model.eval()
        terms = _batched(lambda a, b: _elbo_terms(model, a, b), x, y, size=50)
        kl, reconstruction = terms.mean(0).tolist()
        result.update(kl=kl, reconstruction=reconstruction, kl_share=kl / (kl + reconstruction))
    return result


@torch.no_grad()
def diagnose_run(model, config: Config, budget: dict, device: torch.device) -> dict:
    """Where a CVAE's excess NLL sits: per true shape, and visible vs occluded pixels.

    Per shape k: the importance-sampled NLL of its test pairs beside -log pi_k (their gap is
    the mass the model misses on that shape), and its `prior_decomposition`. At q's mean: the
    summed cross-entropy on the visible and on the occluded pixels (pixel sharpness; only
    telling where q is narrow, as under the ELBO: an IW-trained q is broad and its mean is
    not a typical latent). The prior's std per latent channel (mean over the test inputs)
    shows how many axes of z the model uses to tell the shapes apart, and how far it has
    widened them towards ``model.logvar_bound``.
    """
    truth, x, y = _test_set(config)
    x, y = x.to(device), y.to(device)
    ll = _batched(
        lambda a, b: model.log_likelihood(a, b, budget["is"], "importance", min(budget["is"], 100)),
        x, y, size=50,
    )  # fmt: skip
    model.eval()
    posterior_mean = _batched(
        lambda a, b: model.recognition_net(model._recognition_input(a, b)).mean, x, y, size=50
    )
    logits = model.decode(x, posterior_mean.unsqueeze(0))[0]
    cross_entropy = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    hidden = torch.from_numpy(truth.hidden).to(device)
    modes = torch.from_numpy(truth.modes).to(device)
    per_mode = []
    for k, pi in enumerate(truth.probs):
        chosen = modes == k
        per_mode.append({"pi": float(pi), "true_nll": -math.log(pi),
                         "nll_importance": float(-ll[chosen].mean()) if chosen.any() else None,
                         "pairs": int(chosen.sum())})  # fmt: skip
    mass, sharpness, marginal, in_between = prior_decomposition(
        model, x[: budget["mode_inputs"]], truth.candidates[: budget["mode_inputs"]],
        budget["mode_samples"],
    )  # fmt: skip
    for k, row in enumerate(per_mode):
        row.update(prior_mass=mass[k], sharpness=sharpness[k], monte_carlo_p=marginal[k])
    return {
        "per_mode": per_mode,
        "prior_samples_in_between": in_between,
        **_prior_summary(model, x),
        "visible_nll_at_q_mean": float((cross_entropy * ~hidden).flatten(1).sum(1).mean()),
        "occluded_nll_at_q_mean": float((cross_entropy * hidden).flatten(1).sum(1).mean()),
    }


def _prior_summary(model, x: torch.Tensor) -> dict:
    """The prior's std per latent channel (mean over inputs, and over components weighted
    by the mixture weights), and for a mixture its weights, heaviest first (mean over inputs).
    """
    priors = [model._encode(x[i : i + 50]).prior for i in range(0, len(x), 50)]
    if not isinstance(priors[0], GaussianMixture):
        std = torch.cat([p.stddev for p in priors])  # (N, C, h, w)
        return {"prior_std_per_channel": _rounded(std.transpose(0, 1).flatten(1).mean(1))}
    weights = torch.cat([p.mixture_distribution.probs for p in priors])  # (N, M)
    std = torch.cat([p.components.scale for p in priors]).flatten(3).mean(3)  # (N, M, C)
    per_channel = (weights[..., None] * std).sum(1).mean(0)
    return {
        "prior_std_per_channel": _rounded(per_channel),
        "prior_component_weights": _rounded(weights.mean(0).sort(descending=True).values),
    }


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 3) for v in values]


@torch.no_grad()
def prior_decomposition(
    model, x: torch.Tensor, candidates: np.ndarray, num_samples: int
) -> tuple[list[float], list[float], list[float], float]:
    """Split the model's p(y_k|x) into where its prior sends z and how sharp the decoder is.

    For S prior samples per input, region k holds the z whose decoded map explains candidate
    k best. Per shape, pooled over inputs: the prior's mass on region k, the mean p(y_k|x,z)
    inside it (1 for a perfectly sharp decoder; NaN if no sample fell there), and the Monte
    Carlo p(y_k|x); and the share of samples that no candidate explains with p > 1/2 (maps
    between shapes: the prior's mass on the regions' borders). p(y_k|x) is about mass x
    sharpness, so an NLL above H is either mass on the wrong shapes (the TV shows it) or
    probability lost inside the right region.
    """
    num_modes = candidates.shape[1]
    hits, inside, marginal = (np.zeros(num_modes) for _ in range(3))
    in_between = 0
    for i in range(len(x)):
        log_probs = torch.log_softmax(model.sample(x[i : i + 1], num_samples)[:, 0].float(), 1)
        labels = torch.from_numpy(candidates[i]).long().to(log_probs.device)  # (K, H, W)
        # log p(y_k|x,z_s) for every sample and candidate: (S, K)
        scores = torch.stack(
            [log_probs.gather(1, c.expand(num_samples, 1, *c.shape)).flatten(1).sum(1)
             for c in labels], 1
        )  # fmt: skip
        region = scores.argmax(1)
        probs = scores.double().exp()
        in_between += int((probs.max(1).values < 0.5).sum())
        for k in range(num_modes):
            chosen = region == k
            hits[k] += float(chosen.sum())
            inside[k] += float(probs[chosen, k].sum())
            marginal[k] += float(probs[:, k].mean())
    sharpness = np.divide(inside, hits, out=np.full(num_modes, np.nan), where=hits > 0)
    return (
        (hits / hits.sum()).tolist(),
        sharpness.tolist(),
        (marginal / len(x)).tolist(),
        float(in_between / hits.sum()),
    )


def _elbo_terms(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, 2): KL(q||p) and -log p(y|x,z) with z ~ q, nats per image, from the forward."""
    out = model(x, y)
    pixels = y[0].numel()
    row = torch.stack([out.terms["kl"], out.terms["nll_posterior"] * pixels])
    return row[None].expand(len(x), 2)


def _cell(runs: list[dict], key: str, digits: int = 2) -> str:
    values = [r["test"][key] for r in runs if key in r["test"]]
    if not values:
        return ""
    mean, stderr = mean_stderr(values)
    if math.isnan(stderr):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def _markdown(report: dict) -> str:
    budget = report["budget_settings"]
    lines = [
        "| K | model | NLL, IS | NLL, MC | true NLL (H) | NLL / true | TV, mean per input | "
        "TV, pooled | GED | visible acc. % | KL (share of -ELBO) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in report["tasks"]:
        for objective in OBJECTIVES:
            runs = [r for r in report["runs"] if r["k"] == k and r["objective"] == objective]
            if not runs:
                continue
            test0 = runs[0]["test"]
            exact = "nll_exact" in test0
            kl = ""
            if "kl" in test0:
                kl = f"{_cell(runs, 'kl')} ({_cell(runs, 'kl_share')})"
            first = _cell(runs, "nll_exact" if exact else "nll_importance")
            cells = [
                str(k),
                objective,
                f"{first} (exact)" if exact else first,
                _cell(runs, "nll_monte_carlo"),
                f"{_cell(runs, 'true_nll')} ({test0['entropy']:.2f})",
                _cell(runs, "nll_ratio"),
                _cell(runs, "tv_mean"),
                _cell(runs, "tv_pooled"),
                _cell(runs, "ged", 3),
                _cell(runs, "visible_accuracy"),
                kl,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Test split of {budget['test']} pairs per task, mean ± standard error over seeds "
        f"{report['seeds']}; {budget['steps']} updates of batch {budget['batch']} on "
        f"{budget['train']} training pairs per model. NLL in nats per image (IS: importance "
        f"sampling, S={budget['is']}; MC: Monte Carlo from the prior, S={budget['mc']}); NLL / "
        f"true uses the lower (tighter) of the estimates, exact for cnn and gdnn. TV and GED from "
        f"{budget['mode_samples']} samples on each of the first {budget['mode_inputs']} test "
        f"inputs (GED from the first {budget['ged_samples']}; a sample farther than "
        f"{MISS_FRACTION:.0%} of the occluded pixels from every candidate is a miss). "
        f"Command: `{report['command']}`; {report['hardware']}, torch {report['torch']}, "
        f"{report['date']}, {report['seconds'] / 60:.1f} minutes in all"
        + (" (summed over the merged jobs)." if "merged_from" in report else "."),
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    """OUT.json and its markdown table OUT.md, each written atomically."""
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(out.with_suffix(".md"), _markdown(report))


def merge_reports(paths: list[Path]) -> dict:
    """One report from several runs of this script (seeds run as parallel jobs).

    The reports must share the budget's settings and the miss threshold; a (K, objective,
    seed) may appear only once. The NLL ratio is recomputed with `tightest_nll`, so reports
    written before it took the tighter estimate read the same as new ones.
    """
    reports = [json.loads(Path(path).read_text()) for path in paths]
    first = reports[0]
    for path, report in zip(paths, reports, strict=True):
        for key in ("budget_settings", "miss_fraction"):
            if report[key] != first[key]:
                raise ValueError(f"{path}: {key} {report[key]} differs from {paths[0]}'s")
    runs, seen = [], set()
    for path, report in zip(paths, reports, strict=True):
        for run in report["runs"]:
            key = (run["k"], run["objective"], run["seed"])
            if key in seen:
                raise ValueError(f"{path}: K={key[0]} {key[1]} seed {key[2]} is already merged")
            seen.add(key)
            test = run["test"]
            test["nll_ratio"] = tightest_nll(test, run["objective"]) / test["true_nll"]
            runs.append(run)

    def joined(key: str) -> str:
        return "; ".join(dict.fromkeys(str(report[key]) for report in reports))

    return {
        **first,
        **{key: joined(key) for key in ("command", "date", "hardware", "torch")},
        "tasks": sorted({run["k"] for run in runs}),
        "seeds": sorted({run["seed"] for run in runs}),
        "seconds": sum(report["seconds"] for report in reports),
        "merged_from": [str(path) for path in paths],
        "runs": runs,
    }


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


def main(argv: list[str] | None = None) -> dict:
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
    print(_markdown(report))
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
