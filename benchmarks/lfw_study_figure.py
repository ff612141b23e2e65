"""The LFW study's models side by side on the same test images (issue 20's picture of every
model on the same inputs), drawn from the runs' best validation checkpoints:

    python benchmarks/lfw_study.py --stage figure --data-root DATA/lfw --runs RUNS2
        [--rows ROW ...] [--figure PNG]  (default: lfw128_models_samples.png in docs/)

By default each objective's row trained as the peers are (multi-scale losses and noise
injection), or its row without noise when only that one has a checkpoint here, then our
recipe's and the peers' rows; each from its lowest seed whose checkpoint is here (a run
restored from kept files has none), named with it. A row with none is left out and named;
no row to draw is an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lfw_study import DONE, StudyError
from lfw_study_table import (
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


def drawable(runs: Path, rows: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Per row, the best checkpoint of its lowest seed that finished here (named by the row,
    and "seed k" below it); and the rows with none (unfinished, or restored from kept files)."""
    found, missing = {}, []
    for row in rows:
        run_dir = _usable_run(runs, row)
        if run_dir is None:
            missing.append(row)
        else:
            found[f"{row}\nseed {_seed_of(run_dir)}"] = _best_checkpoint(run_dir)
    return found, missing


def _usable_run(runs: Path, row: str) -> Path | None:
    """The row's lowest seed that finished here with its best checkpoint, if any."""
    seeds = _run_dir(runs, row, 0).parent.glob("seed*")
    folders = sorted((f for f in seeds if f.name.removeprefix("seed").isdigit()), key=_seed_of)
    usable = [f for f in folders if (f / DONE).is_file() and _best_checkpoint(f).is_file()]
    return usable[0] if usable else None


def _seed_of(run_dir: Path) -> int:
    return int(run_dir.name.removeprefix("seed"))


def draw_models(args: argparse.Namespace) -> Path:
    """The figure (args.figure): the first test images, one square hidden in each, every
    drawable row's prediction, samples and uncertainty."""
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.training import dataset_for
    from cvae_seg.visualization import models_grid

    runs = Path(args.runs)
    checkpoints, missing = drawable(runs, resolve_rows(runs, args.rows or figure_rows(runs)))
    if not checkpoints:
        raise StudyError(f"no finished run with a checkpoint in {args.runs} for {missing}")
    models, config = {}, None
    for row, checkpoint in checkpoints.items():
        models[row], config, _ = _test_config(checkpoint, args)
        models[row].eval()
    test = dataset_for(config, "test")
    shown = list(range(min(SHOWN_IMAGES, len(test.arrays.images))))
    picture = models_grid(models, test, shown, SHOWN_SAMPLES, occlude=HIDDEN_SHARE)
    path = atomic_save_image(args.figure, picture)
    left_out = f"; left out (no finished run's checkpoint): {', '.join(missing)}"
    print(f"drew {len(models)} models to {path}" + (left_out if missing else ""))
    return path
