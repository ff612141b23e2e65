"""The LFW study's models side by side on the same test images (issue 20's picture of every
model on the same inputs), drawn from the runs' best validation checkpoints:

    python benchmarks/lfw_study.py --stage figure --data-root DATA/lfw --runs RUNS2
        [--rows ROW ...] [--figure PNG]  (default: lfw128_models_samples.png in docs/)

By default each objective's row trained as the peers are (multi-scale losses and noise
injection), or its row without noise when only that one can be drawn here, then our
recipe's and the peers' rows; each from its lowest seed that can be drawn, named with it.
A run can be drawn while its checkpoint is here, and after that from its kept rows
(`FIGURE_ROWS`, made from the checkpoint when the run finishes and kept with --keep), so
the picture gathers rows trained on machines long gone. A row with neither is left out
and named; no row to draw is an error.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from lfw_study import DONE, StudyError
from lfw_study_table import (
    FIGURE_ROWS,
    _best_checkpoint,
    _rows,
    _run_dir,
    _test_config,
    resolve_rows,
    side_rows,
)

SHOWN_IMAGES, SHOWN_SAMPLES, HIDDEN_SHARE = 2, 3, 0.39  # the square hides < 40% of the side


def figure_rows(runs: Path) -> list[str]:
    """Per objective of Table 2 its (msc, NI) row, or its (msc) row where only that one has a
    checkpoint here (so that every objective is drawn when it can be), then `side_rows`."""
    rows = []
    for row in _rows():
        if row.endswith("(msc, NI)"):
            without_noise = row.replace("(msc, NI)", "(msc)")
            only_without_noise = (
                _usable_run(runs, row) is None and _usable_run(runs, without_noise) is not None
            )
            rows.append(without_noise if only_without_noise else row)
    return rows + side_rows()


def _usable_run(runs: Path, row: str) -> Path | None:
    """The row's lowest seed that finished here with its best checkpoint or its kept rows."""
    seeds = _run_dir(runs, row, 0).parent.glob("seed*")
    folders = sorted((f for f in seeds if f.name.removeprefix("seed").isdigit()), key=_seed_of)
    usable = [f for f in folders if (f / DONE).is_file() and _drawable_run(f)]
    return usable[0] if usable else None


def _drawable_run(run_dir: Path) -> bool:
    return (run_dir / FIGURE_ROWS).is_file() or _best_checkpoint(run_dir).is_file()


def _seed_of(run_dir: Path) -> int:
    return int(run_dir.name.removeprefix("seed"))


def keep_figure_rows(run_dir: Path, args: argparse.Namespace) -> Path | None:
    """run_dir/`FIGURE_ROWS` (made once, from the best checkpoint): the inputs row and the
    model's row as the picture draws them. None for a run with neither file nor checkpoint."""
    path = run_dir / FIGURE_ROWS
    if path.is_file() or not _best_checkpoint(run_dir).is_file():
        return path if path.is_file() else None
    from cvae_seg.io import atomic_write_bytes
    from cvae_seg.training import dataset_for
    from cvae_seg.visualization import models_grid_rows

    model, config, _ = _test_config(_best_checkpoint(run_dir), args)
    test = dataset_for(config, "test")
    shown = list(range(min(SHOWN_IMAGES, len(test.arrays.images))))
    inputs, row = models_grid_rows(model, test, shown, SHOWN_SAMPLES, occlude=HIDDEN_SHARE)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, inputs=inputs, row=row, images=np.array(shown),
                        samples=SHOWN_SAMPLES, occlude=HIDDEN_SHARE)  # fmt: skip
    return atomic_write_bytes(path, buffer.getvalue())


def _kept_rows(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A `FIGURE_ROWS` file's inputs row, model row and image count; one drawn with other
    settings than this module's is refused by name."""
    with np.load(path) as kept:
        settings = (int(kept["samples"]), float(kept["occlude"]))
        if settings != (SHOWN_SAMPLES, HIDDEN_SHARE):
            raise StudyError(f"{path}: drawn with {settings[0]} samples and squares of "
                             f"{settings[1]}; this picture shows {SHOWN_SAMPLES} and "
                             f"{HIDDEN_SHARE} (remove the file to draw it again)")  # fmt: skip
        return kept["inputs"], kept["row"], len(kept["images"])


def draw_models(args: argparse.Namespace) -> Path:
    """The figure (args.figure): the first test images, one square hidden in each, every
    drawable row's prediction, samples and uncertainty (from its kept rows, made first where
    only the checkpoint is here)."""
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.visualization import grid_from_rows

    runs = Path(args.runs)
    rows = resolve_rows(runs, args.rows or figure_rows(runs))
    found, missing = {}, []
    for row in rows:
        run_dir = _usable_run(runs, row)
        if run_dir is None:
            missing.append(row)
        else:
            found[f"{row}\nseed {_seed_of(run_dir)}"] = keep_figure_rows(run_dir, args)
    if not found:
        raise StudyError(f"no finished run with a checkpoint or kept rows in {args.runs} for "
                         f"{missing}")  # fmt: skip
    drawn, reference = {}, None
    for label, path in found.items():
        inputs, drawn[label], images = _kept_rows(path)
        if reference is None:
            reference = path, inputs
        elif not np.array_equal(inputs, reference[1]):
            raise StudyError(f"{path}: drawn on other test images than {reference[0]}; the "
                             "picture shows every model on the same ones")  # fmt: skip
    picture = grid_from_rows(reference[1], drawn, images, SHOWN_SAMPLES)
    path = atomic_save_image(args.figure, picture)
    left_out = f"; left out (no finished run's checkpoint or kept rows): {', '.join(missing)}"
    print(f"drew {len(drawn)} models to {path}" + (left_out if missing else ""))
    return path
