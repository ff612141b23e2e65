"""Train and score one run of the LFW table on the lent GPU machine; bring back its kept files.

The table's protocol (`lfw_study.py --stage table`) trains each run on one CPU thread, and a
run of over three CPU-hours outlasts the machines here. This script does, on the GPU
machine, what `--stage table` and `--stage score` do for one run: it trains the run from the
study's pinned checkout (`_train_run`, the same child and recipe), finishes it there while
its checkpoint is at hand (`finish_run`: test record, samples against the annotation, rows
of the picture of every model) and packs its kept files (`KEPT_RUN`) into one tar under the
run's name. Unpacked into the study's --keep folder, `--stage score` restores it like any
kept run. run.json records the GPU the run trained on, so the table can say so.

The device machine receives the working tree without .git, so the commits (the one trained
and the one scoring) are passed in rather than read from git. Usage, on that machine:

    python benchmarks/device_lfw_run.py --row "CVAE recipe (msc, NI)" --seed 0 \\
        --source SRC --trained-at SHA --scored-at SHA --data-root LFW --out OUT/kept.tar
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import lfw_study
import lfw_study_table as table
from lfw_study import RUN_RECORD, Run, _read_json, _write_json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", required=True, help="a row of the table, e.g. 'CVAE (msc, NI)'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="r18_b16_cosine", help="the study's recipe")
    parser.add_argument("--source", required=True, help="checkout at --trained-at to train from")
    parser.add_argument("--trained-at", required=True, help="the study's pinned commit")
    parser.add_argument("--scored-at", required=True, help="the commit of this checkout")
    parser.add_argument("--data-root", required=True, help="the LFW Part Labels folder")
    parser.add_argument("--cache-dir", default="/tmp/lfw_cache", help="decoded-split cache")
    parser.add_argument("--runs", default="/tmp/lfw_runs", help="the runs folder")
    parser.add_argument("--samples", type=int, default=50, help="S for the sampled -CLL")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=4, help="torch threads while scoring")
    parser.add_argument("--out", required=True, help="the tar of the run's kept files")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config overrides (a smoke test's; recorded in run.json)",
    )
    return parser


def train_one(args: argparse.Namespace, run: Run) -> str:
    """Train the run as the table does (a child process from --source, one thread), then
    note the GPU in its run.json; returns what happened, in words."""
    study = argparse.Namespace(runs=args.runs, data_root=args.data_root, set=args.set,
                               cache_dir=args.cache_dir, max_steps_per_call=None,
                               allow_commit_change=False)  # fmt: skip
    words = lfw_study._train_run(study, Path(args.source), args.trained_at, run)
    record_path = Path(args.runs) / run.name / RUN_RECORD
    record = _read_json(record_path)
    device = gpu_name()
    if device:
        record["calls"][-1]["device"] = device
    _write_json(record_path, record)
    return words


def gpu_name() -> str | None:
    """The GPU the child trained on (it takes the first one when there is one), else None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def finish_and_pack(args: argparse.Namespace, run: Run) -> Path:
    """Score the finished run (`finish_run`), then tar its kept files under its name."""
    # no .git on the device machine: the records name the commit passed in as scored_at
    scoring = argparse.Namespace(threads=args.threads, device=args.device, keep=None,
                                 samples=args.samples, data_root=args.data_root,
                                 cache_dir=args.cache_dir, scored_at=args.scored_at)  # fmt: skip
    table.finish_run(Path(args.runs), run.name, scoring)
    run_dir = Path(args.runs) / run.name
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name in table.KEPT_RUN:
            if (run_dir / name).is_file():
                tar.add(run_dir / name, arcname=f"{run.name}/{name}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.row not in {*table._rows(), *table.side_rows()} or args.row in table.APART_ROWS:
        print(f"error: --row {args.row!r} is not a trained row of the LFW table", file=sys.stderr)
        return 2
    runs = Path(args.runs)
    run_dir = table._run_dir(runs, args.row, args.seed)
    run = Run(str(run_dir.relative_to(runs)), args.recipe,
              table.row_overrides(args.row, args.seed, "lfw"))  # fmt: skip
    words = train_one(args, run)
    print(f"{run.name}: {words}", flush=True)
    if not (run_dir / lfw_study.DONE).is_file():
        return 1
    print(f"kept files: {finish_and_pack(args, run)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
