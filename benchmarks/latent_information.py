"""How much of the label a model's latent carries, for one checkpoint with a recognition net.

    python benchmarks/latent_information.py CONFIG CHECKPOINT [overrides ...]
        [--split val] [--images 100] [--samples 16] [--out FILE.json]

Pixel accuracy of three decodings of the same images: the prediction (`model.predict`, the
prior's mean: what the tables score), single samples of the prior (`model.sample`, the mean
accuracy of one sample), and the recognition net's mean (q(z|x,y), which sees the label).
When the last is far ahead of the first, the decoder has learnt to read part of the label
from z, and the prior, which sees only the image, cannot supply it: the gap is in the prior
net or in the objective, not in the decoder.
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

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import load_config
from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import describe_hardware
from cvae_seg.training import dataset_for, load_trained, select_device


def _hits(logits: torch.Tensor, y: torch.Tensor, scored: torch.Tensor) -> float:
    """Correctly labelled scored pixels of logits ([S,] B, C, H, W), averaged over samples."""
    correct = (logits.argmax(-3) == y) & scored
    return correct.sum().item() * y.numel() / correct.numel()


def accuracies(model, dataset, images: int, samples: int, batch: int, device) -> dict:
    """Pixel accuracy (%) of the prediction, of one prior sample and of q's mean decoding."""
    hits = {"prediction": 0.0, "prior_sample": 0.0, "posterior_mean": 0.0}
    scored_pixels = 0
    with torch.no_grad():
        for start in range(0, images, batch):
            items = [dataset[i] for i in range(start, min(start + batch, images))]
            x = torch.stack([item["image"] for item in items]).to(device)
            y = torch.stack([item["mask"] for item in items]).to(device)
            scored = torch.ones_like(y, dtype=torch.bool)
            if model.ignore_index is not None:
                scored = y != model.ignore_index
            posterior_mean = model.posterior(x, y).mean.unsqueeze(0)
            hits["prediction"] += _hits(model.predict(x), y, scored)
            hits["prior_sample"] += _hits(model.sample(x, samples), y, scored)
            hits["posterior_mean"] += _hits(model.decode(x, posterior_mean)[0], y, scored)
            scored_pixels += scored.sum().item()
    return {name: 100 * value / scored_pixels for name, value in hits.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_intermixed_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    model, _, _ = load_trained(args.checkpoint, device)
    if model.recognition_net is None:
        parser.error(f"{args.checkpoint}: the model has no recognition net q(z|x,y) to compare "
                     "with its prior (cvae, hybrid and probunet models have one)")  # fmt: skip
    model.eval()
    dataset = dataset_for(load_config(args.config, args.overrides), args.split)
    count = min(args.images, len(dataset))
    torch.manual_seed(0)
    given = sys.argv[1:] if argv is None else argv
    report = {
        "command": shlex.join(["python", "benchmarks/latent_information.py", *given]),
        "date": datetime.date.today().isoformat(),
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "images": count,
        "samples": args.samples,
        "hardware": describe_hardware(device),
        "pixel_accuracy": accuracies(model, dataset, count, args.samples, args.batch, device),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    return report


if __name__ == "__main__":
    main()
