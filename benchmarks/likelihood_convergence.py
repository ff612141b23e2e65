"""How far an importance-sampled (or Monte Carlo) CLL is from its limit, for one checkpoint.

    python benchmarks/likelihood_convergence.py CONFIG CHECKPOINT [overrides ...]
        [--split test] [--images 500] [--samples 5000] [--method importance] [--out FILE.json]

Draws ``--samples`` log-weights per example once, then cuts them into disjoint blocks of
S = 10, 100, 1,000, ... samples (`cvae_seg.likelihood.block_estimates`): the mean negative
CLL over the first ``--images`` examples for each S (with the spread between blocks) shows
how much of a reported number is the estimator's looseness rather than the model's.
Answers "is S = 100 enough?" for Table 1. A model whose likelihood is exact (a deterministic
objective, the ensemble) gets its exact value instead (``nll_exact``), so that a sampled
model's estimates can be set beside it on the same examples.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import load_config  # noqa: E402
from cvae_seg.io import atomic_write_text  # noqa: E402
from cvae_seg.likelihood import block_estimates, log_mean_exp  # noqa: E402
from cvae_seg.reporting import describe_hardware  # noqa: E402
from cvae_seg.training import dataset_for, load_trained, select_device  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--method", choices=["importance", "monte_carlo"], default="importance")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_intermixed_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    config = load_config(args.config, args.overrides)
    model, _, _ = load_trained(args.checkpoint, device)
    dataset = dataset_for(config, args.split)
    count = min(args.images, len(dataset))
    exact = model.likelihood_method == "exact"
    if args.method == "importance" and model.likelihood_method == "monte_carlo":
        parser.error(f"{args.checkpoint}: --method importance needs a recognition net, which "
                     "this model has not; give --method monte_carlo")  # fmt: skip
    method = "auto" if exact else args.method
    torch.manual_seed(0)
    weights = []
    for start in range(0, count, args.batch):
        items = [dataset[i] for i in range(start, min(start + args.batch, count))]
        x = torch.stack([item["image"] for item in items]).to(device)
        y = torch.stack([item["mask"] for item in items]).to(device)
        weights.append(
            model.log_likelihood_weights(x, y, args.samples, method, chunk_size=500).cpu()
        )
    given = sys.argv[1:] if argv is None else argv
    report = {
        "command": shlex.join(["python", "benchmarks/likelihood_convergence.py", *given]),
        "date": datetime.date.today().isoformat(),
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "images": count,
        "method": "exact" if exact else args.method,
        "hardware": describe_hardware(device),
    }
    if exact:  # the weights are per member (or one), summed rather than sampled
        report["nll_exact"] = -log_mean_exp(torch.cat(weights, 1)).mean().item()
    else:
        sizes = [s for s in (10, 100, 1000, 10000) if s < args.samples] + [args.samples]
        report["nll_by_samples"] = block_estimates(torch.cat(weights, 1), sizes)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    return report


if __name__ == "__main__":
    main()
