"""The paper's segmentation experiment (Tables 2-4) on LFW part labels or CUB, one command.

    python benchmarks/segmentation.py --dataset lfw --data-root DATA/lfw [--budget cpu|full]
        [--backbones sohn2015 unet] [--seeds 0 1 2] [--out results/segmentation_lfw]

Every run trains one row of Table 2 with the shipped config (configs/{lfw,cub}_<objective>)
and evaluates its best checkpoint on the validation split: pixel accuracy, class-averaged
accuracy, per-class and mean IoU, foreground IoU, and the negative conditional
log-likelihood (Table 3; importance sampling for cvae/hybrid, Monte Carlo for gsnn, exact
for cnn/gdnn). Then the partial-observation grid of Table 4 compares the best CVAE's
iterative inference with the GDNN's plain prediction. Writes one JSON per run under
WORK/<backbone>/<row>/seed<k>/, OUT.json and OUT.md (mean and standard error over seeds).

Budgets:
- ``full``: 128x128, the paper's update counts (10k LFW, 16k CUB), all twelve rows (CNN
  and CNN/GDNN/GSNN/CVAE/hybrid with multi-scale losses, each without and with noise
  injection), AMP and channels-last on a GPU.
- ``cpu``: the five objectives with multi-scale losses and noise, 64x64 inputs, 1,500
  updates of batch 32, S = 10 for the likelihood; for 2 CPU cores.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import load_config  # noqa: E402
from cvae_seg.evaluation import evaluate, partial_observation  # noqa: E402
from cvae_seg.io import atomic_write_text  # noqa: E402
from cvae_seg.reporting import describe_hardware, mean_stderr  # noqa: E402
from cvae_seg.training import dataset_for, load_trained, make_loader, select_device, train  # noqa: E402

# (row name, objective, multi-scale, noise injection)
ROWS = [
    ("CNN", "cnn", False, False),
    ("CNN (msc)", "cnn", True, False),
    ("GDNN (msc)", "gdnn", True, False),
    ("GSNN (msc)", "gsnn", True, False),
    ("CVAE (msc)", "cvae", True, False),
    ("hybrid (msc)", "hybrid", True, False),
    ("CNN (NI)", "cnn", False, True),
    ("CNN (msc, NI)", "cnn", True, True),
    ("GDNN (msc, NI)", "gdnn", True, True),
    ("GSNN (msc, NI)", "gsnn", True, True),
    ("CVAE (msc, NI)", "cvae", True, True),
    ("hybrid (msc, NI)", "hybrid", True, True),
]
# backbone -> the shipped configs' name prefix: configs/<dataset>_<prefix><objective>.yaml
BACKBONES = {
    "sohn2015": "",  # the paper's network and heads
    "unet": "unet_",  # smp Unet, ResNet-18 from scratch, light heads
}
BUDGETS = {
    "full": {
        "rows": [name for name, *_ in ROWS],
        "overrides": ["train.amp=true", "train.channels_last=true", "data.num_workers=4"],
        "samples": 50,
    },
    "cpu": {
        "rows": [name for name, _, msc, ni in ROWS if msc and ni],
        "overrides": ["data.size=64", "train.max_steps=1500", "train.eval_interval=500",
                      "data.num_workers=0"],
        "samples": 10,
    },
}  # fmt: skip
# Two of the paper's CUB test IoUs (Sohn et al. 2015), the rows the CUB table quotes.
PAPER_CUB_TEST_IOU = {"CNN": 81.90, "GSNN (msc, NI)": 85.39}
METRICS = ["pixel_accuracy", "class_accuracy", "mean_iou", "foreground_iou", "nll"]


def _overrides(row: tuple, budget: dict, args: argparse.Namespace, seed: int) -> list[str]:
    _, _, msc, noise = row
    return [
        f"data.root={args.data_root}",
        f"data.cache_dir={args.work_dir / 'cache'}",
        f"train.seed={seed}",
        f"data.noise={0.4 if noise else 0.0}",
        f"model.scale_weights={[1.0, 1.0, 1.0] if msc else [0.0, 0.0, 1.0]}",
        *budget["overrides"],
        *args.extra,
    ]


def _config_name(dataset: str, backbone: str, objective: str) -> str:
    return f"{dataset}_{BACKBONES[backbone]}{objective}.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["lfw", "cub"], default="lfw")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=["unet"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=None, help="row names (default: the budget's)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--extra", nargs="*", default=[], help="more config overrides")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; 1 when other jobs share the cores (oversubscribed threads "
        "spin and slow every job down several times)",
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only rewrite the markdown of this JSON report"
    )
    return parser


def _run_dir(args: argparse.Namespace, backbone: str, row_name: str, seed: int) -> Path:
    return args.work_dir / backbone / row_name.replace(" ", "_").replace(",", "") / f"seed{seed}"


def _run(row: tuple, backbone: str, seed: int, budget: dict, args, device) -> dict:
    """Train one row of Table 2 for one seed and evaluate its best checkpoint on val."""
    name, objective = row[0], row[1]
    config = load_config(
        ROOT / "configs" / _config_name(args.dataset, backbone, objective),
        _overrides(row, budget, args, seed),
    )
    run_dir = _run_dir(args, backbone, name, seed)
    run_started = time.perf_counter()
    train(config, run_dir, device=str(device), progress=False)
    model, _, classes = load_trained(run_dir / "best.pt", device)
    val = dataset_for(config, "val")
    torch.manual_seed(seed)
    metrics = evaluate(
        model,
        make_loader(val, config.eval.batch_size, 0, device),
        classes,
        device,
        num_samples=budget["samples"],
        progress=None,
    )
    run = {"backbone": backbone, "row": name, "seed": seed, "objective": objective,
           "config": config.model_dump(mode="json"), "val": metrics,
           "seconds": round(time.perf_counter() - run_started, 1)}  # fmt: skip
    atomic_write_text(run_dir / "result.json", json.dumps(run, indent=2))
    brief = {k: round(metrics[k], 2) for k in METRICS if k in metrics}
    print(backbone, name, seed, brief, flush=True)
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        atomic_write_text(args.render.with_suffix(".md"), _markdown(report, args.dataset))
        return report
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_root is None:
        parser.error("--data-root is required (the folder of the data set)")
    args.work_dir = args.work_dir or Path("work_dirs") / f"segmentation_{args.dataset}"
    args.out = args.out or Path("results") / f"segmentation_{args.dataset}_{args.budget}"
    budget = BUDGETS[args.budget]
    rows = [row for row in ROWS if row[0] in (args.rows or budget["rows"])]
    device = select_device(args.device)
    started = time.perf_counter()
    runs = [
        _run(row, backbone, seed, budget, args, device)
        for backbone in args.backbones
        for row in rows
        for seed in args.seeds
    ]
    partial = _table4(runs, args, device)
    report = {
        "command": shlex.join(["python", "benchmarks/segmentation.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "hardware": describe_hardware(device),
        "budget": args.budget,
        "likelihood_samples": budget["samples"],
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
        "partial_observation": partial,
    }  # fmt: skip
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(args.out.with_suffix(".md"), _markdown(report, args.dataset))
    print(_markdown(report, args.dataset))
    return report


def _table4(runs: list[dict], args: argparse.Namespace, device: torch.device) -> dict:
    """The best CVAE (lowest validation NLL) against the GDNN of the same backbone."""
    result = {}
    for backbone in {run["backbone"] for run in runs}:
        mine = [r for r in runs if r["backbone"] == backbone]
        cvaes = [r for r in mine if r["objective"] in ("cvae", "hybrid")]
        gdnns = [r for r in mine if r["objective"] == "gdnn"]
        if not cvaes or not gdnns:
            continue
        best_cvae = min(cvaes, key=lambda r: r["val"]["nll"])
        gdnn = max(gdnns, key=lambda r: r["val"]["pixel_accuracy"])
        entry = {"cvae_row": best_cvae["row"], "gdnn_row": gdnn["row"]}
        for label, run in (("cvae", best_cvae), ("gdnn", gdnn)):
            run_dir = _run_dir(args, backbone, run["row"], run["seed"])
            model, config, _ = load_trained(run_dir / "best.pt", device)
            config.data.root = args.data_root
            loader = make_loader(dataset_for(config, "val"), config.eval.batch_size, 0, device)
            fill = [-m / s for m, s in zip(config.data.mean, config.data.std, strict=True)]
            entry[label] = partial_observation(model, loader, device, fill, progress=None)
        result[backbone] = entry
    return result


def _markdown(report: dict, dataset: str) -> str:
    columns = ["pixel acc. (%)", "class acc. (%)", "mean IoU (%)", "FG IoU (%)", "-CLL (nats)"]
    lines = [
        "| backbone | model | config | updates | train min | " + " | ".join(columns) + " | runs |",
        "|---|---|---|---|---|" + "---|" * (len(columns) + 1),
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in report["runs"]:
        groups.setdefault((run["backbone"], run["row"]), []).append(run)
    for (backbone, row), runs in groups.items():
        cells = []
        for metric in METRICS:
            mean, error = mean_stderr([r["val"][metric] for r in runs])
            cells.append(f"{mean:.2f}" + ("" if math.isnan(error) else f" ± {error:.2f}"))
        first = runs[0]
        setup = [
            f"`configs/{_config_name(dataset, backbone, first['objective'])}`",
            str(first["config"]["train"]["max_steps"]),
            f"{sum(r['seconds'] for r in runs) / 60 / len(runs):.0f}",
        ]
        lines.append(f"| {backbone} | {row} | " + " | ".join(setup + cells) + f" | {len(runs)} |")
    lines.append("")
    lines.append(
        f"Validation split of {dataset.upper()}; ± is the standard error over seeds. -CLL: "
        f"negative conditional log-likelihood, nats per image, S = {report['likelihood_samples']} "
        "(importance sampling for CVAE/hybrid, Monte Carlo for GSNN, exact for CNN/GDNN). "
        f"Command: `{report['command']}`; {report['hardware']}; {report['date']}; budget "
        f"`{report['budget']}`; {report['seconds'] / 3600:.2f} hours in all. Every run's "
        "config, metrics (per-class IoU included) and time are in the JSON beside this table."
    )
    if dataset == "cub":
        lines.append(f"Paper (CUB test IoU, the values we could confirm): {PAPER_CUB_TEST_IOU}.")
    for backbone, entry in report["partial_observation"].items():
        title = (
            f"Table 4 ({backbone}): accuracy (%) on the dropped pixels, {entry['cvae_row']} "
            f"iterative inference vs {entry['gdnn_row']} plain prediction."
        )
        lines += ["", title, "", "| block | drop | GDNN | CVAE plain | CVAE iterative |"]
        lines.append("|---|---|---|---|---|")
        for g, c in zip(entry["gdnn"], entry["cvae"], strict=True):
            cells = [g["block_size"], f"{g['drop_prob']:.2f}", f"{g['plain']:.2f}"]
            cells += [f"{c['plain']:.2f}", f"{c['iterative']:.2f}"]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
