"""The known-truth benchmark's reliability figure: every model's calibration on the occluded
pixels, one panel per model, one row per task K.

Drawn from the runs' kept ``result.json`` alone (the diagram's bins as lists, written when a
run is scored), so it needs no checkpoint: a study spanning machines keeps those files. The
occluded pixels are the ones a model can be unsure of; every visible pixel is predictable.
"""

from __future__ import annotations

import json

from known_truth_figure import FigureModel
from PIL import Image, ImageDraw

from cvae_seg.evaluation import diagram_from_lists
from cvae_seg.visualization import reliability_plot

__all__ = ["NoKeptDiagram", "reliability_figure"]


class NoKeptDiagram(ValueError):
    """None of the runs to draw kept a reliability diagram."""


PANEL = 260  # pixels per side of one model's diagram
COLUMNS = 5  # panels per line: nine models would make one line too wide to read
_TITLE = 18  # pixels above a task's row


def _kept_diagram(entry: FigureModel) -> tuple[dict, float, int] | None:
    """The run's occluded-pixel diagram lists, its ECE and the samples averaged, or None for
    a run scored before the diagram was kept."""
    result = json.loads((entry.checkpoint.parent / "result.json").read_text())
    test = result.get("test", {})
    if "reliability_occluded" not in test:
        return None
    samples = result["scoring"]["calibration_samples"]
    return test["reliability_occluded"], test["ece_occluded"], samples


def reliability_figure(
    models: dict[int, list[FigureModel]],
) -> tuple[Image.Image, dict[int, list[str]]]:
    """The picture, and per K the labels of the models it shows (a run without a kept
    diagram is left out). ``models`` as `saved_models` gives them."""
    sections: list[tuple[str, list[Image.Image]]] = []
    shown: dict[int, list[str]] = {}
    for k, entries in sorted(models.items()):
        panels, counts = [], set()
        for entry in entries:
            kept = _kept_diagram(entry)
            if kept is None:
                continue
            lists, ece, samples = kept
            title = f"{entry.label}: ECE {ece:.3f}"
            panels.append(reliability_plot(diagram_from_lists(lists), title, PANEL))
            shown.setdefault(k, []).append(entry.label)
            counts.add(samples)
        if panels:
            mean_of = "/".join(map(str, sorted(counts)))
            sections.append((f"K = {k}: accuracy per confidence bin on the occluded pixels "
                             f"(mean softmax of {mean_of} samples)", panels))  # fmt: skip
    if not sections:
        raise NoKeptDiagram("none of these runs kept a reliability diagram in its result.json "
                            "(runs scored before the diagram was kept have none)")  # fmt: skip
    return _compose(sections), shown


def _compose(sections: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """A title over each section, its panels in lines of at most `COLUMNS`."""
    lines = [-(-len(panels) // COLUMNS) for _, panels in sections]
    width = min(COLUMNS, max(len(panels) for _, panels in sections)) * PANEL
    canvas = Image.new("RGB", (width, len(sections) * _TITLE + sum(lines) * PANEL), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (title, panels), count in zip(sections, lines, strict=True):
        draw.text((4, top + 3), title, fill="black")
        top += _TITLE
        for index, panel in enumerate(panels):
            line, column = divmod(index, COLUMNS)
            canvas.paste(panel, (column * PANEL, top + line * PANEL))
        top += count * PANEL
    return canvas
