"""Reproduce the paper's Table 1 (MNIST quadrant completion) in one command.

    python benchmarks/mnist_table1.py --data-root DATA/mnist [--budget cpu|paper]
        [--quadrants 1 2 3] [--work-dir work_dirs/mnist_table1] [--out results/mnist_table1]

Trains the NN, GSNN and CVAE of every quadrant setting with configs/mnist_q{1,2,3}_*.yaml
(early stopping on the validation CLL, best checkpoint kept), then estimates the negative
conditional log-likelihood in nats per example on the validation and test sets: exact for the
NN, Monte Carlo from the prior for the GSNN and CVAE, importance sampling from the
recognition net for the CVAE. Writes OUT.json and OUT.md (beside the paper's numbers, with
the command, hardware, budget and sample counts).

Budgets: ``paper`` uses the paper's S (Monte Carlo 10,000, importance sampling 100) and the
configs' schedule (25 epochs, cosine learning-rate decay; for a GPU); ``cpu`` trains 10 epochs
per model at a constant learning rate and uses S = 100 for both estimators, for 2 CPU cores;
``ci`` (two updates, S = 2) is for the tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import load_config  # noqa: E402
from cvae_seg.evaluation import evaluate_likelihood  # noqa: E402
from cvae_seg.io import atomic_write_text  # noqa: E402
from cvae_seg.reporting import describe_hardware  # noqa: E402
from cvae_seg.training import dataset_for, load_trained, make_loader, select_device, train  # noqa: E402

# Table 1 as widely quoted from the paper: negative CLL, (validation, test).
PAPER = {
    ("NN", "exact"): {1: (100.03, 99.75), 2: (62.14, 62.18), 3: (26.01, 25.99)},
    ("GSNN", "monte_carlo"): {1: (100.03, 99.82), 2: (62.48, 62.41), 3: (26.20, 26.29)},
    ("CVAE", "monte_carlo"): {1: (68.62, 68.39), 2: (45.57, 45.34), 3: (20.97, 20.96)},
    ("CVAE", "importance"): {1: (64.05, 63.91), 2: (44.96, 44.73), 3: (20.97, 20.95)},
}
BUDGETS = {
    "cpu": {
        "overrides": ["train.max_steps=3900", "train.patience=null", "train.scheduler=constant"],
        "mc": 100,
        "is": 100,
    },
    "paper": {"overrides": [], "mc": 10000, "is": 100},
    "ci": {"overrides": ["train.max_steps=2", "train.patience=null"], "mc": 2, "is": 2},
}
ROWS = [("NN", "nn", "exact"), ("GSNN", "gsnn", "monte_carlo"), ("CVAE", "cvae", "monte_carlo"),
        ("CVAE", "cvae", "importance")]  # fmt: skip


# the estimators each model is scored with (exact for the NN, which has no latent)
METHODS = {"nn": ["exact"], "gsnn": ["monte_carlo"], "cvae": ["monte_carlo", "importance"]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--quadrants", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/mnist_table1"))
    parser.add_argument("--out", type=Path, default=Path("results/mnist_table1"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--extra", nargs="*", default=[], help="more config overrides (tests)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 beside other jobs)"
    )
    return parser


def _run(
    args: argparse.Namespace, budget: dict, quadrants: int, name: str, device
) -> tuple[dict, bool]:
    """Train one model of the table, then estimate its NLL on val and test.

    Returns the run's numbers and whether its config binarises the pixels.
    """
    key = f"q{quadrants}_{name}"
    overrides = [f"data.root={args.data_root}", *budget["overrides"], *args.extra]
    config = load_config(ROOT / "configs" / f"mnist_q{quadrants}_{name}.yaml", overrides)
    run_started = time.perf_counter()
    summary = train(config, args.work_dir / key, device=str(device), progress=False)
    model, _, _ = load_trained(args.work_dir / key / "best.pt", device)
    run = {"steps": summary["step"], "best_val_nll_during_training": summary["best"]}
    torch.manual_seed(0)
    for split in ("val", "test"):
        loader = make_loader(dataset_for(config, split), 500, 0, device)
        for method in METHODS[name]:
            samples = {"exact": 1, "monte_carlo": budget["mc"], "importance": budget["is"]}
            run[f"{split}_{method}"] = evaluate_likelihood(
                model,
                loader,
                device,
                num_samples=samples[method],
                method="auto" if method == "exact" else method,
                chunk_size=100,
                progress=None,
            )
    run["seconds"] = round(time.perf_counter() - run_started, 1)
    nll = {k: round(v["nll"], 2) for k, v in run.items() if isinstance(v, dict)}
    print(key, f"{run['steps']} steps, {run['seconds']} s", nll, flush=True)
    return run, config.data.binarize


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    device = select_device(args.device)
    started = time.perf_counter()
    runs: dict[str, dict] = {}
    for quadrants in args.quadrants:
        for name in ("nn", "gsnn", "cvae"):
            runs[f"q{quadrants}_{name}"], binarize = _run(args, budget, quadrants, name, device)
    report = {
        "command": " ".join(["python benchmarks/mnist_table1.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "budget": args.budget,
        "samples": {"monte_carlo": budget["mc"], "importance": budget["is"]},
        "likelihood": "Bernoulli, binarised" if binarize else "Bernoulli on grey levels",
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(args.out.with_suffix(".md"), _markdown(report, args.quadrants))
    print(_markdown(report, args.quadrants))
    return report


def _markdown(report: dict, quadrants: list[int]) -> str:
    samples = report["samples"]
    heads = [f"{q} quadrant{'s' if q > 1 else ''}: val / test (paper)" for q in quadrants]
    lines = ["| model (estimator) | " + " | ".join(heads) + " |", "|---|" + "---|" * len(quadrants)]
    for label, name, method in ROWS:
        cells = []
        for q in quadrants:
            run = report["runs"].get(f"q{q}_{name}")
            paper = PAPER[(label, method)][q]
            if run is None:
                cells.append("")
                continue
            val, test = run[f"val_{method}"], run[f"test_{method}"]
            ours = f"{val['nll']:.2f} / {test['nll']:.2f} ± {test['nll_stderr']:.2f}"
            cells.append(f"{ours} ({paper[0]:.2f} / {paper[1]:.2f})")
        estimator = {"exact": "exact", "monte_carlo": f"MC, S={samples['monte_carlo']}",
                     "importance": f"IS, S={samples['importance']}"}[method]  # fmt: skip
        lines.append(f"| {label} ({estimator}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Negative conditional log-likelihood, nats per example over the hidden pixels "
        f"({report['likelihood']}); ± is the standard error over test examples. "
        f"Command: `{report['command']}`; {report['hardware']}, torch {report['torch']}, "
        f"{report['date']}, budget `{report['budget']}`, "
        f"{report['seconds'] / 60:.1f} minutes in all.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
