"""Score finished known-truth runs once more, on another split, leaving their results as they are.

A run's ``result.json`` holds its scores on the split its command named. When those numbers
have already guided a choice (our CVAE recipe was chosen in November 2026 by its scores on
the test pairs the side-by-side run then scored), ``known_truth.py --rescore RUNS --split
test2`` scores every finished run's ``best.pt`` on new pairs drawn like the test split's
(`cvae_seg.data.known_truth.TEST_SPLITS`), which no choice has seen. Each run's scores go to
``result_<split>.json`` beside its ``result.json``, so a stopped call goes on where it was;
the report is written as the training command's is, its training columns copied from the
runs. Runs without a checkpoint (kept files only) are listed as not rescored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from known_truth_eval import evaluate_run
from known_truth_report import MODELS
from known_truth_runs import finished

from cvae_seg.io import atomic_write_text
from cvae_seg.training import load_trained

__all__ = ["rescore_runs"]

# what a rescored row copies from the run's own row (who it is, and what training cost)
_COPIED = ("k", "objective", "head", "seed", "commits", "seconds", "train_seconds")


def _order(run_dir: Path) -> tuple[int, int, str, int]:
    """(K, the model's place in the report, its name, seed): the training report's order."""
    k, model, seed = run_dir.parts[-3:]
    place = MODELS.index(model) if model in MODELS else len(MODELS)
    return int(k[1:]), place, model, int(seed.removeprefix("seed"))


def _rescored(run_dir: Path, row: dict[str, Any], scoring: dict[str, Any], budget: dict,
              device: torch.device) -> dict[str, Any]:  # fmt: skip
    """The run's row with ``test`` scored on ``scoring["split"]``; kept as result_<split>.json."""
    path = run_dir / f"result_{scoring['split']}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("scoring") == scoring:
            return kept
    model, config, _ = load_trained(run_dir / "best.pt", device)
    torch.manual_seed(row["seed"])
    scores = evaluate_run(model, config, budget, device, scoring["split"], scoring["hit_distance"])
    rescored = {**{key: row[key] for key in _COPIED if key in row}, "scoring": scoring,
                "test": scores}  # fmt: skip
    atomic_write_text(path, json.dumps(rescored, indent=1))
    return rescored


def _data_settings(run_dir: Path) -> dict[str, Any]:
    """The run's held-out share and annotators, which the report's header states."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    return {"holdout": data.get("known_truth_holdout", 0.0),
            "annotators": data.get("known_truth_annotators", 1)}  # fmt: skip


def rescore_runs(
    runs_dir: Path,
    report: dict[str, Any],
    scoring: dict[str, Any],
    budget: dict,
    device: torch.device,
    tasks: list[int] | None = None,
) -> dict[str, Any]:
    """``report`` (the header) with every finished run under RUNS_DIR/K<k>/<model>/seed<n>
    scored on ``scoring["split"]``; runs without best.pt, failed or unfinished listed apart."""
    rows, not_rescored, settings = [], [], {}
    for run_dir in sorted(runs_dir.glob("K*/*/seed*"), key=_order):
        k, _, model, seed = _order(run_dir)
        if tasks and k not in tasks:
            continue
        row, name = finished(run_dir), f"K={k} {model} seed {seed}"
        if row is None or "failed" in row:
            not_rescored.append(f"{name} (not finished)" if row is None else f"{name} (failed)")
        elif not (run_dir / "best.pt").is_file():
            not_rescored.append(f"{name} (no checkpoint)")
        else:
            run_settings = _data_settings(run_dir)
            if settings and run_settings != settings:
                raise ValueError(
                    f"{run_dir}: data settings {run_settings} differ from the other runs' "
                    f"{settings}; rescore them apart (--tasks)"
                )
            settings = run_settings
            rows.append(_rescored(run_dir, row, scoring, budget, device))
            print(name, "rescored on", scoring["split"], flush=True)
    seconds = round(sum(row.get("seconds", 0.0) for row in rows), 1)
    return {**report, **settings, "runs": rows, "failed": [], "unfinished": [],
            "not_rescored": not_rescored, "seconds": seconds}  # fmt: skip
