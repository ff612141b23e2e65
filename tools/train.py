"""Train a model from a YAML config.

    python tools/train.py configs/demo.yaml [--work-dir DIR] [--resume [CKPT]] [--seed N]
        [--device cpu|cuda] [--amp] [key.sub=value ...]
    torchrun --nproc_per_node=N tools/train.py configs/demo.yaml ...   # DDP, same arguments

The work dir (default work_dirs/<config name>) gets the resolved config.yaml, metrics.csv
(one row per evaluation), TensorBoard events when tensorboard is installed, last.pt and
best.pt. ``--resume`` without a path continues from <work dir>/last.pt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=20")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CKPT")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from cvae_seg import distributed
    from cvae_seg.config import load_config
    from cvae_seg.engine import train

    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # "--resume key=value": argparse gave the bare flag the override that followed it
        overrides.insert(0, args.resume)
        args.resume = "last"
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.amp:
        overrides.append("train.amp=true")
    config = load_config(args.config, overrides)
    work_dir = args.work_dir or Path("work_dirs") / args.config.stem
    resume = None
    if args.resume is not None:
        resume = work_dir / "last.pt" if args.resume == "last" else Path(args.resume)
    try:
        result = train(config, work_dir, resume=resume, device=args.device, progress=not args.quiet)
    finally:
        distributed.cleanup()
    if distributed.is_main_process():
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    # under torchrun, a failing process's traceback goes into torchrun's error summary
    from torch.distributed.elastic.multiprocessing.errors import record

    record(main)()
