"""The demo: train a CVAE on generated data and draw its samples, a few minutes on a CPU.

    python demo/run_demo.py [--work-dir work_dirs/demo] [--steps 600] [key.sub=value ...]

The data are discs whose right side hides behind a grey occluder; behind it the object has no
"ear" (50%), a bar (30%) or an upper block (20%). Nothing in the image tells which, so one
input has several right answers: the grid shows the CVAE drawing them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/demo"))
    parser.add_argument("--steps", type=int, default=None, help="training steps (config: 600)")
    parser.add_argument(
        "--out", type=Path, default=None, help="grid PNG (default: in the work dir)"
    )
    args = parser.parse_args(argv)

    from cvae_seg.cli import run

    config = str(ROOT / "configs" / "demo.yaml")
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.max_steps={args.steps}")
    run(["train", config, *overrides, "--work-dir", str(args.work_dir)])
    out = args.out or args.work_dir / "demo_samples.png"
    return run(
        [
            "visualize",
            config,
            str(args.work_dir / "last.pt"),
            *overrides,
            "--num-images",
            "6",
            "--num-samples",
            "6",
            "--out",
            str(out),
        ]
    )


if __name__ == "__main__":
    main()
