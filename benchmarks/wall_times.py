"""How long the things a newcomer runs first take: the demo and the test suite.

    python benchmarks/wall_times.py [--out FILE] [--only demo tests]

Runs each command in a fresh process, one after the other, and records its wall time, the
CPU time of it and its children, and the machine's load average just before it started (a
busy machine inflates both). The demo writes into a temporary folder. Run it on an otherwise
idle machine: the numbers are what docs/benchmarks/demo.md and docs/reliability.md cite.
``--only`` measures some commands again and keeps the file's other records (each dated).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import describe_hardware

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "demo": [sys.executable, "demo/run_demo.py", "--work-dir", "{tmp}/demo"],
    "tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(name: str, tmp: str) -> dict:
    """Wall and CPU seconds of one command; raises if it fails."""
    command = [part.format(tmp=tmp) for part in COMMANDS[name]]
    load = os.getloadavg()[0]
    cpu_before, started = _children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}")
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(command).replace(sys.executable, "python").replace(tmp, "TMP"),
        "wall_s": round(wall, 1),
        "cpu_s": round(_children_cpu_seconds() - cpu_before, 1),
        "load_before": round(load, 2),
        "last_line": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "wall_times_cpu.json")
    parser.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=sorted(COMMANDS))
    args = parser.parse_args(argv)
    hardware = describe_hardware(torch.device("cpu"))
    kept = earlier_runs(args.out, hardware, args.only)  # checked before hours of measuring
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: time_command(name, tmp) for name in args.only}
    report = {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "runs": dict(sorted({**kept, **runs}.items())),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def earlier_runs(path: Path, hardware: str, measured_again: list[str]) -> dict:
    """The records of ``path`` that are not measured again, each with its date. The file is
    one machine's: another machine's records are refused rather than mixed in."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get("hardware") != hardware:
        raise SystemExit(f"{path} was measured on {earlier.get('hardware')}, this is "
                         f"{hardware}; write to another --out")  # fmt: skip
    runs = earlier.get("runs", {}).items()
    return {name: {"date": earlier.get("date"), **run}
            for name, run in runs if name not in measured_again}  # fmt: skip


if __name__ == "__main__":
    main()
