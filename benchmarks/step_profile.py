"""One training step at LFW scale on the CPU: seconds per step, its phases and its FLOPs.

    python benchmarks/step_profile.py candidates [--steps 3]
        [--out results/lfw128_step_candidates.json]
    python benchmarks/step_profile.py profile --data-root DATA/lfw --cache-dir RUNS/cache
        [--config configs/lfw128_cpu_r18_b16.yaml] [--out results/lfw128_step_profile.json]

``candidates`` times a few network/batch/size candidates for the LFW CPU study
(docs/benchmarks/lfw128.md) with one thread, on random batches: the seconds per training
step (forward, loss, backward, Adam) that decide how many updates a CPU-hour buys.

``profile`` splits one training step of a study recipe into data loading (the cached
training split through the training loader), forward with the loss, backward and the
optimizer step; counts its FLOPs with `torch.utils.flop_counter.FlopCounterMode`; and
reports GFLOP/s beside the plain smp model (same backbone, cross-entropy) measured in the
same process, with and without channels-last and with 1 and 2 threads. The load average
at start and end goes into the file: measurements beside other jobs are not comparable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cvae_seg.config import Config, load_config
from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import cpu_name
from cvae_seg.training import build_model

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "lfw_unet_cvae.yaml"
NARROW = "model.backbone_kwargs={decoder_channels: [128, 64, 32, 16, 16]}"
# (name, size, batch, overrides on configs/lfw_unet_cvae.yaml)
CANDIDATES: list[tuple[str, int, int, list[str]]] = [
    ("unet_r18_b16_128", 128, 16, []),
    ("unet_r18_b32_128", 128, 32, []),
    ("unet_r18_b16_64", 64, 16, []),
    ("unet_r18_b32_64", 64, 32, []),
    ("unet_r18_narrow_b16_128", 128, 16, [NARROW]),
    ("unet_mobilenetv3_b16_128", 128, 16, ["model.encoder_name=tu-mobilenetv3_large_100"]),
    ("unet_efficientnet_b0_b16_128", 128, 16, ["model.encoder_name=tu-efficientnet_b0"]),
]
Step = Callable[[], dict[str, float]]


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _phased_step(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
) -> Step:
    """A training step that returns the seconds of its phases (data, forward, backward, optim)."""

    def step() -> dict[str, float]:
        start = time.perf_counter()
        x, y = batch()
        loaded = time.perf_counter()
        loss = loss_fn(model, x, y)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        return {
            "data_s": loaded - start,
            "forward_s": forward - loaded,
            "backward_s": backward - forward,
            "optimizer_s": end - backward,
            "step_s": end - start,
        }

    return step


def _mean_phases(step: Step, warmup: int, repeats: int) -> dict[str, float]:
    """Phase seconds averaged over ``repeats`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    totals: dict[str, float] = {}
    for _ in range(repeats):
        for key, value in step().items():
            totals[key] = totals.get(key, 0.0) + value
    return {key: round(value / repeats, 4) for key, value in totals.items()}


def _step_flops(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> int:
    """FLOPs of forward, loss and backward on one batch (the optimizer's are negligible)."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(model, x, y).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _cvae_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x, y, mode="loss").loss


def _plain_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _random_batch(size: int, batch: int, channels_last: bool = False) -> Callable:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator)
    y = torch.randint(0, 3, (batch, size, size), generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: (x, y)


def _cvae_model(config: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(config, 3).train()


def _plain_model(config: Config) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.create_model(
        config.model.arch,
        encoder_name=config.model.encoder_name,
        encoder_weights=None,
        classes=3,
        **config.model.backbone_kwargs,
    )
    return model.train()


def _optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    train = config.train
    return torch.optim.Adam(
        model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay
    )


def _measure(
    model: torch.nn.Module,
    loss_fn: Callable,
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    config: Config,
    repeats: int,
) -> dict[str, Any]:
    """Phase seconds, FLOPs per step and GFLOP/s of one model on one batch source."""
    step = _phased_step(model, loss_fn, batch, _optimizer(model, config))
    phases = _mean_phases(step, warmup=1, repeats=repeats)
    x, y = batch()
    flops = _step_flops(model, loss_fn, x, y)
    compute_s = phases["forward_s"] + phases["backward_s"]
    return {
        **phases,
        "gflop_per_step": round(flops / 1e9, 2),
        "gflop_per_s": round(flops / 1e9 / compute_s, 1),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def run_candidates(steps: int) -> list[dict[str, Any]]:
    """Seconds per CVAE training step of every candidate, one thread, random batches."""
    torch.set_num_threads(1)
    rows = []
    for name, size, batch, overrides in CANDIDATES:
        config = load_config(BASE_CONFIG, [*overrides, f"data.size={size}",
                                           f"data.batch_size={batch}"])  # fmt: skip
        row = _measure(_cvae_model(config), _cvae_loss, _random_batch(size, batch), config, steps)
        rows.append({"name": name, "size": size, "batch": batch, "overrides": overrides, **row})
        print(json.dumps(rows[-1]), flush=True)
    config = load_config(BASE_CONFIG, ["data.size=128", "data.batch_size=16"])
    plain = _measure(_plain_model(config), _plain_loss, _random_batch(128, 16), config, steps)
    rows.append({"name": "plain_smp_unet_r18_b16_128", "size": 128, "batch": 16, **plain})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def _data_batches(config: Config, channels_last: bool) -> Callable:
    """Batches of the cached training split through the training loader (no workers)."""
    from cvae_seg.data import build_dataset
    from cvae_seg.training import StepSampler, make_loader

    dataset = build_dataset(config.data, "train", train=True)
    sampler = StepSampler(len(dataset), config.data.batch_size, config.train.seed)
    loader = make_loader(dataset, config.data.batch_size, 0, torch.device("cpu"), sampler)
    batches = iter(loader)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        item = next(batches)
        x = item["image"]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, item["mask"]

    return batch


def _top_ops(config: Config, rows: int = 12) -> list[dict[str, Any]]:
    """torch.profiler's costliest operators (self CPU time) over one CVAE training step."""
    from torch.profiler import ProfilerActivity, profile

    model = _cvae_model(config)
    step = _phased_step(model, _cvae_loss, _data_batches(config, False), _optimizer(model, config))
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count}
        for e in averages[:rows]
    ]


def run_profile(config: Config, repeats: int) -> dict[str, Any]:
    """The recipe's step split into phases beside the plain smp model, per setting."""
    settings = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for channels_last in (False, True):
            row: dict[str, Any] = {"threads": threads, "channels_last": channels_last}
            for kind, build, loss_fn in (("cvae", _cvae_model, _cvae_loss),
                                         ("plain_smp", _plain_model, _plain_loss)):  # fmt: skip
                model = build(config)
                if channels_last:
                    model = model.to(memory_format=torch.channels_last)
                batch = _data_batches(config, channels_last)
                row[kind] = _measure(model, loss_fn, batch, config, repeats)
            row["cvae_over_plain_step"] = round(
                row["cvae"]["step_s"] / row["plain_smp"]["step_s"], 3
            )
            settings.append(row)
            print(json.dumps(row), flush=True)
    torch.set_num_threads(1)
    return {"settings": settings, "top_ops_1_thread": _top_ops(config)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["candidates", "profile"])
    parser.add_argument("--config", default=str(ROOT / "configs" / "lfw128_cpu_r18_b16.yaml"))
    parser.add_argument("--data-root", help="LFW part labels root (profile)")
    parser.add_argument("--cache-dir", help="decoded-split cache folder (profile)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--note", default="", help="free text stored in the file")
    parser.add_argument("--out", help="JSON file to write")
    return parser


def _environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores ({platform.machine()})",
        "torch": torch.__version__,
        "load_average_start": _load_average(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    env = _environment()
    if args.mode == "candidates":
        result: dict[str, Any] = {"candidates": run_candidates(args.steps)}
    else:
        if not args.data_root:
            raise SystemExit("profile needs --data-root (the LFW part labels folder)")
        overrides = [f"data.root={args.data_root}", "data.num_workers=0"]
        if args.cache_dir:
            overrides.append(f"data.cache_dir={args.cache_dir}")
        result = {"config": args.config, **run_profile(load_config(args.config, overrides),
                                                        args.steps)}  # fmt: skip
    env["load_average_end"] = _load_average()
    output = {**env, "mode": args.mode, "steps": args.steps, "note": args.note, **result}
    if args.out:
        atomic_write_text(args.out, json.dumps(output, indent=2) + "\n")
    return output


if __name__ == "__main__":
    main()
