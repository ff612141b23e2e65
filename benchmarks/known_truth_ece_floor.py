"""The ECE a perfect sampler gets on the known-truth task: how much of a model's ECE on the
occluded pixels comes from averaging a finite number of samples, not from the model.

    python benchmarks/known_truth_ece_floor.py RUN/config.yaml [RUN2/config.yaml ...] \
        --split test --samples 4 16 64 256 --repeats 5 --out results/known_truth_ece_floor.json

Each config names one task (K, image size, split seed, annotators, held-out layouts: a kept
run's config.yaml). On the pixels the benchmark's ECE scores (`known_truth_eval.
_calibration`: the occluded pixels of each image against its label, 15 bins), two
predictions that no model can beat: the mean of S draws from the true distribution (S
one-hot candidate maps, as a model whose samples are exact gives them), ``--repeats`` times
with other draws, and the true marginal itself (S = infinity). The gap between the two is
what the finite mean adds to a model's ECE; the marginal's own ECE is what one label per
image leaves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from known_truth_eval import evaluation_set

HIDDEN = 255  # the label that leaves a pixel out of the ECE, as in known_truth_eval


def _one_hot_candidates(candidates: np.ndarray, classes: int) -> torch.Tensor:
    """(N, K, H, W) label maps -> (N, K, C, H, W) one-hot probabilities."""
    maps = torch.from_numpy(candidates.astype(np.int64))
    return torch.nn.functional.one_hot(maps, classes).permute(0, 1, 4, 2, 3).double()


def ece_of(weights: np.ndarray, one_hot: torch.Tensor, target: torch.Tensor) -> float:
    """The ECE of each image's mixture of its candidates with ``weights`` (N, K)."""
    from cvae_seg.metrics import ExpectedCalibrationError

    mixed = torch.einsum("nk,nkchw->nchw", torch.from_numpy(weights).double(), one_hot)
    metric = ExpectedCalibrationError(ignore_index=HIDDEN)
    metric.update(mixed.float(), target)
    return float(metric.compute())


def perfect_sampler_eces(truth: Any, one_hot: torch.Tensor, target: torch.Tensor, samples: int,
                         repeats: int) -> list[float]:  # fmt: skip
    """The occluded-pixel ECE of a model whose ``samples`` samples per image are exact
    draws, once per repeat; each (samples, repeat) pair has its own fixed seed."""
    values = []
    for repeat in range(repeats):
        rng = np.random.default_rng([samples, repeat])
        draws = rng.multinomial(samples, truth.probs, size=len(target)) / samples
        values.append(ece_of(draws, one_hot, target))
    return values


def _scored_pixels(config: Any, split: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The task's truth, its candidates one-hot, and the labels of the occluded pixels (the
    rest ``HIDDEN``)."""
    truth, _, labels = evaluation_set(config, split)
    classes = int(max(truth.candidates.max(), labels.max())) + 1
    one_hot = _one_hot_candidates(truth.candidates, classes)
    return truth, one_hot, labels.masked_fill(~torch.from_numpy(truth.hidden), HIDDEN)


def task_floor(config: Any, split: str, samples: int, repeats: int = 20) -> float:
    """The mean of `perfect_sampler_eces` on one task's ``split``: the floor beside a
    model's ECE on the occluded pixels when it averages ``samples`` samples."""
    truth, one_hot, target = _scored_pixels(config, split)
    return float(np.mean(perfect_sampler_eces(truth, one_hot, target, samples, repeats)))


def floors(config: Any, split: str, sample_counts: list[int], repeats: int) -> dict[str, Any]:
    """The perfect sampler's ECE on the occluded pixels per sample count, and the true
    marginal's, for one task."""
    truth, one_hot, target = _scored_pixels(config, split)
    count = len(target)
    result: dict[str, Any] = {
        "modes": len(truth.probs), "images": count, "split": split,
        "marginal": ece_of(np.tile(truth.probs, (count, 1)), one_hot, target),
        "samples": {},
    }  # fmt: skip
    for samples in sample_counts:
        values = perfect_sampler_eces(truth, one_hot, target, samples, repeats)
        result["samples"][str(samples)] = {
            "mean": float(np.mean(values)),
            "stderr": float(np.std(values, ddof=1) / np.sqrt(repeats)) if repeats > 1 else None,
            "values": values,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="kept runs' config.yaml, one per task")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override, for every config")  # fmt: skip
    parser.add_argument("--split", default="test", choices=["val", "test", "test2"])
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    from cvae_seg.config import load_config
    from cvae_seg.io import atomic_write_text
    from cvae_seg.reporting import describe_hardware

    tasks = []
    for path in args.configs:
        try:
            config = load_config(path, args.set)
        except (OSError, ValueError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
        tasks.append({"config": path, **floors(config, args.split, args.samples, args.repeats)})
    report = {
        "command": " ".join(["python", "benchmarks/known_truth_ece_floor.py", *sys.argv[1:]]),
        "hardware": describe_hardware(torch.device("cpu")),
        "date": np.datetime_as_string(np.datetime64("now"), unit="s") + "Z",
        "bins": 15, "pixels": "occluded", "tasks": tasks,
    }  # fmt: skip
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    for task in tasks:
        cells = ", ".join(f"S={s}: {v['mean']:.4f}" for s, v in task["samples"].items())
        print(f"K={task['modes']} ({task['images']} images): {cells}; "
              f"marginal: {task['marginal']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
