"""What a run records as it goes: train.csv, metrics.csv and TensorBoard events.

train.csv has one row per log interval (the mean of each loss term over the steps since the
previous row, and the learning rate); metrics.csv one row per evaluation. A resumed run
drops the rows after its checkpoint and writes them again, so the files read as one run.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from cvae_seg.io import atomic_write

__all__ = ["CsvTable", "MetricsLog", "RunningMeans"]


class CsvTable:
    """A CSV file of rows keyed by "step", rewritten atomically at every row.

    ``resume_step`` > 0 keeps the rows up to that step of an existing file (the run resumes
    there and writes the later ones again); 0 starts a new file.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step and self.path.is_file():
            with open(self.path, newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]

    def append(self, values: dict[str, Any]) -> None:
        self.rows.append(values)
        fields = list(dict.fromkeys(k for r in self.rows for k in r))

        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

        atomic_write(self.path, write, mode="w", newline="")


class RunningMeans:
    """Sums of the loss terms since the last train.csv row, and the number of steps summed.

    Checkpoints keep this state, so a run resumed in the middle of a log interval writes the
    row the uninterrupted run writes; without it (an older checkpoint, another number of
    processes) the sums restart at the resume and the row is the mean of the steps since.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def means(self) -> dict[str, float]:
        return {key: value / self.count for key, value in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])


class MetricsLog:
    """train.csv, metrics.csv and TensorBoard events (when tensorboard is installed) in
    ``work_dir``. With ``enabled=False`` (processes other than rank 0) it does nothing."""

    def __init__(self, work_dir: str | os.PathLike, resume_step: int, enabled: bool = True) -> None:
        work_dir = Path(work_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.train_table = CsvTable(work_dir / "train.csv", resume_step)
        self.eval_table = CsvTable(work_dir / "metrics.csv", resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(work_dir / "tensorboard"), purge_step=resume_step or None)

    def _scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def train_row(self, values: dict[str, Any]) -> None:
        """A train.csv row; ``values`` holds "step"."""
        if self.enabled:
            self.train_table.append(values)
            self._scalars("train", values, values["step"])

    def eval_row(self, values: dict[str, Any]) -> None:
        """A metrics.csv row; ``values`` holds "step"."""
        if self.enabled:
            self.eval_table.append(values)
            self._scalars("val", values, values["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
