"""What one update of each known-truth model costs, as ratios to the CVAE's, in one run.

    python benchmarks/known_truth_cost.py [known_truth.py's model flags: --heads, --objectives,
        --recipes, --config, --annotators, --extra, --tasks, --seeds, --steps, --budget,
        --out results/known_truth_step_costs] [--repeats 20] [--warmup 3]

Builds each model that the same flags would make `benchmarks/known_truth.py` train (its
config, task and batch), and times `train_step` on one batch of the task's training split.
The models are timed in turns (each repeat times every model once), so that a change of load
on the machine falls on all of them alike; the median of each is reported, with its ratio to
the ``cvae`` objective's, and what the whole run would take at these speeds: updates x
models x tasks x seeds, in hours of one thread (training only; the evaluation comes on top).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable

import known_truth
import torch

from cvae_seg.config import Config
from cvae_seg.data import build_dataset
from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import describe_hardware
from cvae_seg.training import build_model, train_step
from cvae_seg.training.optimizer import build_optimizer

REFERENCE = "cvae"  # the ratios' denominator: the paper's CVAE objective


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    return parser


def _step(config: Config) -> Callable[[], object]:
    """One training update of the config's model on a fixed batch of the task."""
    data = build_dataset(config.data, "train", train=True)
    items = [data[i] for i in range(config.data.batch_size)]
    x = torch.stack([item["image"] for item in items])
    y = torch.stack([item["mask"] for item in items])
    model = build_model(config, len(data.classes)).train()
    optimizer, _ = build_optimizer(model, config.train)
    return lambda: train_step(model, x, y, optimizer)


def measure(steps: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per update of each, timed in turns."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    kt_args, rest = known_truth._parser().parse_known_args(argv)
    args = _parser().parse_args(rest)
    torch.set_num_threads(kt_args.threads or 1)
    budget = dict(known_truth.BUDGETS[kt_args.budget])
    budget["steps"] = kt_args.steps or budget["steps"]
    tasks = kt_args.tasks or budget["tasks"]
    seeds = kt_args.seeds if kt_args.seeds is not None else budget["seeds"]
    k = max(tasks)  # the costliest task: its shapes are the same size, its data the largest
    models = known_truth._models(kt_args)
    names = [model.name for model in models]
    if REFERENCE not in names:
        raise SystemExit(f"known_truth_cost: the ratios need the {REFERENCE} objective in the run")
    torch.manual_seed(0)
    steps = {m.name: _step(known_truth._config(kt_args, budget, k, m, 0)) for m in models}
    seconds = measure(steps, args.warmup, args.repeats)
    per_update = sum(seconds.values())
    result = {
        "command": " ".join(["python", "benchmarks/known_truth_cost.py", *argv]),
        "date": datetime.date.today().isoformat(),
        "hardware": describe_hardware(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "task": k,
        "batch": budget["batch"],
        "repeats": args.repeats,
        "seconds_per_update": seconds,
        "ratio_to_cvae": {name: value / seconds[REFERENCE] for name, value in seconds.items()},
        "all_models_per_update_in_cvae_updates": per_update / seconds[REFERENCE],
        "training_hours_per_task_and_seed": per_update * budget["steps"] / 3600,
        "training_hours_in_all": per_update * budget["steps"] * len(tasks) * len(seeds) / 3600,
        "steps": budget["steps"],
        "tasks": tasks,
        "seeds": seeds,
    }
    print(json.dumps(result, indent=2))
    if kt_args.out is not None:  # known_truth.py's --out, here the JSON file's path
        atomic_write_text(kt_args.out.with_suffix(".json"), json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
