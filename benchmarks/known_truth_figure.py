"""The known-truth benchmark's sample grid: every trained model on the same inputs.

One picture, one section per task K. A section's rows: the inputs, the K true candidates
with their probabilities, then one row per model (every objective, recipe and peer head,
labelled with its name) with its samples of the same inputs side by side. One picture
rather than one per K because it keeps one file for ``--figure`` and ``--draw`` and the
docs, and because a model's rows in the K = 2, 4 and 8 sections line up: how a model
degrades as K grows reads down the page. Each model's samples are drawn under the same seed
(0), so a redraw from saved runs (``known_truth.py --draw``) is the same picture.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from known_truth_eval import evaluation_set
from known_truth_report import MODELS
from PIL import Image, ImageDraw

from cvae_seg.training import load_trained
from cvae_seg.visualization import colorize

__all__ = ["FigureModel", "sample_figure", "saved_models"]

_RUN = re.compile(r"K(\d+)/([^/]+)/seed(\d+)/best\.pt")
_TITLE, _CAPTION, _GAP = 18, 12, 10  # pixels: a section's title, the truth's captions, groups
_NEAREST = Image.Resampling.NEAREST  # label maps stay crisp when scaled up


class FigureModel(NamedTuple):
    """One model's block of the figure: its label and the checkpoint it is drawn from."""

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
    if any(folder.glob("K*/*/seed*/best.pt")):
        return [folder]
    return sorted(sub for sub in folder.iterdir() if any(sub.glob("K*/*/seed*/best.pt")))


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
        for checkpoint in runs_dir.glob("K*/*/seed*/best.pt"):
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
            path = runs[index] / f"K{k}" / name / f"seed{task[name, index]}" / "best.pt"
            models[k].append(FigureModel(label, path))
    return models


def _rank(name: str) -> int:
    return MODELS.index(name) if name in MODELS else len(MODELS)


@torch.no_grad()
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
        model, config, _ = load_trained(entry.checkpoint, device)
        truth, x, _ = evaluation_set(config, split)
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
        torch.manual_seed(0)
        maps = model.sample(x[: len(images)].to(device), columns).argmax(2).cpu().numpy()
        samples = [[colorize(m) for m in maps[:, i]] for i in range(len(images))]
        rows.append(_Row(entry.label, samples))
    return rows


def sample_figure(
    models: dict[int, list[FigureModel]], device: torch.device, num_inputs: int = 2,
    num_samples: int = 6, split: str = "val", scale: int = 2,
) -> Image.Image:  # fmt: skip
    """The sample grid: a section per K of ``models`` (from `saved_models`), each model's
    block a row of samples of the first ``num_inputs`` inputs of ``split``.

    Each input gets as many columns as the largest K or ``num_samples``, whichever is more,
    in every section, so that the candidates fit and the inputs line up from one K to the
    next; every model draws that many samples under seed 0. Tiles are scaled ``scale`` times.
    """
    if not models or not all(models.values()):
        raise ValueError("no models to draw: give at least one trained run per task")
    columns = max(num_samples, *models)
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
