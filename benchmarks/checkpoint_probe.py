"""What the probes of one trained checkpoint share: their command line, the model and the first
images of a split, batches of them, and the report's header and file.

A probe (`likelihood_convergence.py`, `latent_information.py`) asks one question of a trained
run on a few examples; this keeps their arguments and their reports alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from cvae_seg.config import load_config
from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import describe_hardware
from cvae_seg.training import dataset_for, load_trained, select_device


def probe_parser(description: str, split: str, images: int, batch: int) -> argparse.ArgumentParser:
    """CONFIG CHECKPOINT [overrides] with --split, --images, --batch, --out, --device, --threads."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--split", choices=["train", "val", "test"], default=split)
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    return parser


class Probe:
    """The checkpoint's model (in eval mode) and the first ``--images`` examples of the split."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.threads:
            torch.set_num_threads(args.threads)
        self.args = args
        self.device = select_device(args.device)
        self.model, _, _ = load_trained(args.checkpoint, self.device)
        self.model.eval()
        self.dataset = dataset_for(load_config(args.config, args.overrides), args.split)
        self.count = min(args.images, len(self.dataset))

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) of the examples, ``--batch`` at a time, on the device."""
        for start in range(0, self.count, self.args.batch):
            stop = min(start + self.args.batch, self.count)
            items = [self.dataset[i] for i in range(start, stop)]
            x = torch.stack([item["image"] for item in items]).to(self.device)
            y = torch.stack([item["mask"] for item in items]).to(self.device)
            yield x, y

    def report(self, script: str, argv: list[str] | None, **fields) -> dict:
        """The report (command, date, checkpoint, split, images, hardware, then ``fields``),
        printed and, with --out, written whole."""
        given = sys.argv[1:] if argv is None else argv
        report = {
            "command": shlex.join(["python", f"benchmarks/{script}", *given]),
            "date": datetime.date.today().isoformat(),
            "checkpoint": str(self.args.checkpoint),
            "split": self.args.split,
            "images": self.count,
            "hardware": describe_hardware(self.device),
            **fields,
        }
        text = json.dumps(report, indent=2)
        if self.args.out is not None:
            atomic_write_text(self.args.out, text)
        print(text)
        return report
