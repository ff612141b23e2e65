"""The known-truth benchmark's sample grid: every trained model on the same inputs.

One picture, one section per task K. A section's rows: the inputs, the K true candidates
with their probabilities, then one row per model (every objective, recipe and peer head,
labelled with its name) with its samples of the same inputs side by side. One picture
rather than one per K because it keeps one file for ``--figure`` and ``--draw`` and the
docs, and because a model's rows in the K = 2, 4 and 8 sections line up: how a model
degrades as K grows reads down the page. Each model's samples are drawn under the same seed
(0), so a redraw from saved runs (``known_truth.py --draw``) is the same picture.

A run keeps its figure rows as ``figure_samples.npz`` too (`save_figure_samples`, written
when the run is scored), so that the figure can be drawn from the runs' kept files alone:
a study that spans machines keeps its small files (`known_truth_runs.keep`), not its
checkpoints.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from known_truth_eval import evaluation_set
from known_truth_report import MODELS
from PIL import Image, ImageDraw

from cvae_seg.config import Config, load_config
from cvae_seg.io import atomic_write_bytes
from cvae_seg.training import load_trained
from cvae_seg.visualization import colorize

__all__ = ["FigureModel", "figure_columns", "sample_figure", "save_figure_samples", "saved_models"]

SAMPLES = "figure_samples.npz"  # a run's figure rows, kept beside (or instead of) best.pt
NUM_INPUTS, NUM_SAMPLES = 2, 6  # the figure's inputs per task, and its fewest columns
_RUN = re.compile(r"K(\d+)/([^/]+)/seed(\d+)/(best\.pt|figure_samples\.npz)")
_SAVED = ("K*/*/seed*/best.pt", f"K*/*/seed*/{SAMPLES}")
_TITLE, _CAPTION, _GAP = 18, 12, 10  # pixels: a section's title, the truth's captions, groups
_NEAREST = Image.Resampling.NEAREST  # label maps stay crisp when scaled up


class FigureModel(NamedTuple):
    """One model's block of the figure: its label and the checkpoint it is drawn from (or
    the run's kept `SAMPLES` file when the checkpoint is gone)."""

    label: str
    checkpoint: Path


class _Row(NamedTuple):
    """A labelled row: per input, its tiles (H, W, 3); captions over the tiles, if any."""

    label: str
    groups: list[list[np.ndarray]]
    captions: Sequence[str] = ()


def _runs_folders(folder: Path) -> list[Path]:
    """The folder when it holds K<k> task folders (WORK/<budget>_<steps>steps), else its
    subfolders that do, so that a whole work dir can be given."""
    if _holds_runs(folder):
        return [folder]
    return sorted(sub for sub in folder.iterdir() if _holds_runs(sub))


def _holds_runs(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in _SAVED)


def _saved_files(runs_dir: Path) -> list[Path]:
    """Each run's best.pt, or its kept samples file where the checkpoint is gone."""
    checkpoints = set(runs_dir.glob(_SAVED[0]))
    kept = [p for p in runs_dir.glob(_SAVED[1]) if p.parent / "best.pt" not in checkpoints]
    return sorted([*checkpoints, *kept])


def saved_models(
    folders: Sequence[Path], tasks: Sequence[int] | None = None,
    names: Sequence[str] | None = None, seed: int | None = None,
) -> dict[int, list[FigureModel]]:  # fmt: skip
    """Every model saved under ``folders`` (runs folders or work dirs), per task K.

    Each model's lowest seed unless ``seed`` is given; only ``tasks`` and ``names`` when
    given. Models come in the table's order (`known_truth_report.MODELS`, then the others by
    name). A name saved in several folders is labelled with its folder too, a seed other
    than 0 with its seed; a folder given twice counts once.
    """
    runs = list(dict.fromkeys(r.resolve() for f in folders for r in _runs_folders(Path(f))))
    found: dict[int, dict[tuple[str, int], int]] = {}  # K -> (name, folder) -> lowest seed
    for index, runs_dir in enumerate(runs):
        for checkpoint in _saved_files(runs_dir):
            match = _RUN.fullmatch(checkpoint.relative_to(runs_dir).as_posix())
            if match is None:
                continue
            k, name, run_seed = int(match[1]), match[2], int(match[3])
            if (tasks and k not in tasks) or (names is not None and name not in names):
                continue
            if seed is None or run_seed == seed:
                task = found.setdefault(k, {})
                task[name, index] = min(run_seed, task.get((name, index), run_seed))
    models = {}
    for k, task in sorted(found.items()):
        order = sorted(task, key=lambda key: (_rank(key[0]), key))
        shared = {name for name, _ in task if sum(other == name for other, _ in task) > 1}
        models[k] = []
        for name, index in order:
            label = name + (f", {'/'.join(runs[index].parts[-2:])}" if name in shared else "")
            label += f", seed {task[name, index]}" if task[name, index] else ""
            run_dir = runs[index] / f"K{k}" / name / f"seed{task[name, index]}"
            path = run_dir / "best.pt"
            models[k].append(FigureModel(label, path if path.is_file() else run_dir / SAMPLES))
    return models


def _rank(name: str) -> int:
    return MODELS.index(name) if name in MODELS else len(MODELS)


def figure_columns(tasks: Sequence[int], num_samples: int = NUM_SAMPLES) -> int:
    """Samples per input in every section: the largest K or ``num_samples``, whichever is
    more, so that the candidates fit and the inputs line up from one K to the next."""
    return max(num_samples, *tasks)


@torch.no_grad()
def _draw(model, x: torch.Tensor, columns: int) -> np.ndarray:
    """``columns`` samples of each input under seed 0: (columns, inputs, H, W) label maps."""
    torch.manual_seed(0)
    return model.sample(x, columns).argmax(2).to(torch.uint8).cpu().numpy()


def save_figure_samples(
    model, config: Config, run_dir: Path, split: str, columns: int, device: torch.device
) -> Path:
    """Keep the run's figure rows (the maps `_section` would draw from its checkpoint) as
    run_dir/`SAMPLES`, so the figure needs no checkpoint once the run is done."""
    _, x, _ = evaluation_set(config, split)
    maps = _draw(model, x[:NUM_INPUTS].to(device), columns)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps, split=np.array(split))
    return atomic_write_bytes(run_dir / SAMPLES, buffer.getvalue())


def _samples(entry: FigureModel, device: torch.device, num_inputs: int, columns: int,
             split: str) -> tuple[Config, np.ndarray]:  # fmt: skip
    """The entry's config and its (columns, num_inputs, H, W) maps: drawn from its
    checkpoint, or the first ``columns`` of the draw kept in its `SAMPLES` file (a run kept
    with more columns, for a K not finished yet, still gives genuine samples of its model)."""
    if entry.checkpoint.name != SAMPLES:
        model, config, _ = load_trained(entry.checkpoint, device)
        _, x, _ = evaluation_set(config, split)
        return config, _draw(model, x[:num_inputs].to(device), columns)
    config = load_config(entry.checkpoint.parent / "config.yaml")
    with np.load(entry.checkpoint) as kept:
        maps, kept_split = kept["maps"], str(kept["split"])
    if kept_split != split or maps.shape[0] < columns or maps.shape[1] < num_inputs:
        raise ValueError(
            f"{entry.checkpoint}: holds {maps.shape[0]} samples of {maps.shape[1]} {kept_split} "
            f"inputs; this figure needs {columns} of {num_inputs} {split} inputs (draw it from "
            "the run's best.pt instead)"
        )
    return config, maps[:columns, :num_inputs]


def _section(
    entries: list[FigureModel], device: torch.device, num_inputs: int, columns: int, split: str
) -> list[_Row]:
    """The rows of one task: inputs, candidates, then each model's ``columns`` samples.

    The inputs are the first ``num_inputs`` of ``split`` as the first model's config seeds
    it; a model whose config gives other inputs is refused, since the figure compares
    models on the same images.
    """
    rows: list[_Row] = []
    reference = None
    for entry in entries:
        config, maps = _samples(entry, device, num_inputs, columns, split)
        truth, _, _ = evaluation_set(config, split)
        images = truth.arrays.images[:num_inputs]
        if reference is None:
            reference = entry.checkpoint, images
            rows.append(_Row("input", [[image] for image in images]))
            candidates = [[colorize(c) for c in group] for group in truth.candidates[:num_inputs]]
            rows.append(_Row("truth", candidates, [f"p={p:.2f}" for p in truth.probs]))
        elif not np.array_equal(images, reference[1]):
            raise ValueError(
                f"{entry.checkpoint}: its {split} inputs differ from those of {reference[0]}; "
                "the figure shows every model on the same inputs"
            )
        samples = [[colorize(m) for m in maps[:, i]] for i in range(len(images))]
        rows.append(_Row(entry.label, samples))
    return rows


def sample_figure(
    models: dict[int, list[FigureModel]], device: torch.device, num_inputs: int = NUM_INPUTS,
    num_samples: int = NUM_SAMPLES, split: str = "val", scale: int = 2,
) -> Image.Image:  # fmt: skip
    """The sample grid: a section per K of ``models`` (from `saved_models`), each model's
    block a row of samples of the first ``num_inputs`` inputs of ``split``.

    Each input gets as many columns as the largest K or ``num_samples``, whichever is more,
    in every section, so that the candidates fit and the inputs line up from one K to the
    next; every model draws that many samples under seed 0. Tiles are scaled ``scale`` times.
    """
    if not models or not all(models.values()):
        raise ValueError("no models to draw: give at least one trained run per task")
    columns = figure_columns(list(models), num_samples)
    sections = []
    for k, entries in sorted(models.items()):
        title = (f"K = {k}: the first {num_inputs} {split} inputs, the true shapes, then "
                 f"{columns} samples per model")  # fmt: skip
        sections.append((title, columns, _section(entries, device, num_inputs, columns, split)))
    return _compose(sections, scale)


def _compose(sections: list[tuple[str, int, list[_Row]]], scale: int) -> Image.Image:
    """Paste the sections one under another: labels on the left, a gap between inputs."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [row.label for _, _, rows in sections for row in rows]
    margin = int(max(measure.textlength(label) for label in labels)) + 8
    side = sections[0][2][0].groups[0][0].shape[0] * scale + 2
    widths = [len(rows[0].groups) * (columns * side + _GAP) for _, columns, rows in sections]
    heights = [_TITLE + sum(_height(row, side) for row in rows) for _, _, rows in sections]
    canvas = Image.new("RGB", (margin + max(widths), sum(heights)), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for title, columns, rows in sections:
        if top:  # a rule between tasks
            draw.line([(0, top), (canvas.width, top)], fill="grey")
        draw.text((2, top + 3), title, fill="black")
        top += _TITLE
        for row in rows:
            top += _height(row, side) - side
            draw.text((2, top + side // 2 - 6), row.label, fill="black")
            for g, group in enumerate(row.groups):
                left = margin + g * (columns * side + _GAP)
                for c, tile in enumerate(group):
                    picture = Image.fromarray(tile).resize((side - 2, side - 2), _NEAREST)
                    canvas.paste(picture, (left + c * side + 1, top + 1))
                    if c < len(row.captions):
                        caption = (left + c * side + 2, top - _CAPTION)
                        draw.text(caption, row.captions[c], fill="black")
            top += side
    return canvas


def _height(row: _Row, side: int) -> int:
    return side + (_CAPTION if row.captions else 0)
