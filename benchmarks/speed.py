"""Cost of the CVAE heads against the plain smp model, measured as ratios in one run.

    python benchmarks/speed.py [--device cpu|cuda] [--repeats 10] [--out results/speed_cpu.json]

Measures, for smp Unet (resnet18 by default) at 128x128, batch 16:
- a training step (forward, loss, backward, Adam step) of the plain model with cross-entropy
  and of the CVAE wrapper for each objective;
- ``predict`` and ``sample(num_samples=16)`` in eval mode (the plain model's eval forward too).
Goals (issue 2): train step <= 1.6x the plain model; 16 samples <= 3x one prediction.
Reports medians over ``--repeats`` timed runs after warm-up, the hardware and settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cvae_seg
from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import describe_hardware


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step(model: torch.nn.Module, loss_fn: Callable, x, y) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        optimizer.step()

    return step


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument(
        "--objectives", nargs="+", default=["cnn", "gdnn", "gsnn", "cvae", "hybrid"]
    )
    parser.add_argument("--generation", nargs="+", default=["light"], choices=["light", "sohn2015"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    return parser


def _plain_costs(args: argparse.Namespace, backbone: Callable, x, y, timing: dict) -> dict:
    """The plain smp model: a cross-entropy training step and an eval forward (seconds)."""
    plain = backbone()
    step = _train_step(plain, lambda m, a, b: F.cross_entropy(m(a), b), x, y)
    # The first timed runs of a process are slow (thread pools, allocator); burn them in on
    # the plain model so that it is not the one that pays for them.
    _timed(step, timing["device"], 2 * args.warmup, 1)
    train_step = _timed(step, **timing)
    plain.eval()
    with torch.no_grad():
        eval_forward = _timed(lambda: plain(x), **timing)
    return {"train_step_s": train_step, "eval_forward_s": eval_forward}


def _cvae_row(args, backbone: Callable, objective: str, generation: str, x, y, plain, timing):
    """One CVAE head's costs and their ratios to the plain model's."""
    model = cvae_seg.CVAE(backbone(), objective=objective, generation=generation)
    model = model.to(timing["device"])
    train = _timed(_train_step(model, lambda m, a, b: m.loss(a, b).loss, x, y), **timing)
    predict = _timed(lambda: model.predict(x), **timing)
    sample = _timed(lambda: model.sample(x, args.num_samples), **timing)
    print(
        f"{generation:8s} {objective:7s} train {train:.3f}s "
        f"({train / plain['train_step_s']:.2f}x) predict {predict:.3f}s "
        f"sample({args.num_samples}) {sample:.3f}s ({sample / predict:.2f}x)",
        flush=True,
    )
    return dict(
        objective=objective,
        generation=generation,
        train_step_s=train,
        train_ratio=train / plain["train_step_s"],
        predict_s=predict,
        sample_s=sample,
        sample_over_predict=sample / predict,
        predict_over_plain_eval=predict / plain["eval_forward_s"],
    )


def _print_table(rows: list[dict], plain: dict, num_samples: int) -> None:
    print()
    print(
        f"| head | objective | train step (s) | / plain smp | predict (s) | "
        f"sample({num_samples}) (s) | / predict |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| plain smp | cross-entropy | {plain['train_step_s']:.3f} | 1.00 | "
        f"{plain['eval_forward_s']:.3f} | | |"
    )
    for r in rows:
        print(
            f"| {r['generation']} | {r['objective']} | {r['train_step_s']:.3f} | "
            f"{r['train_ratio']:.2f} | {r['predict_s']:.3f} | {r['sample_s']:.3f} | "
            f"{r['sample_over_predict']:.2f} |"
        )


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    timing = dict(device=device, warmup=args.warmup, repeats=args.repeats)

    def backbone() -> torch.nn.Module:
        return cvae_seg.create_backbone(args.arch, args.encoder, classes=args.classes).to(device)

    plain = _plain_costs(args, backbone, x, y, timing)
    rows = [
        _cvae_row(args, backbone, objective, generation, x, y, plain, timing)
        for generation in args.generation
        for objective in args.objectives
    ]
    settings = ("arch", "encoder", "size", "batch", "classes", "num_samples", "repeats", "warmup")
    result = dict(
        command=" ".join(["speed.py", *(sys.argv[1:] if argv is None else argv)]),
        date=datetime.date.today().isoformat(),
        hardware=describe_hardware(device),
        torch=torch.__version__,
        settings={key: getattr(args, key) for key in settings},
        plain=plain,
        cvae=rows,
    )
    _print_table(rows, plain, args.num_samples)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
