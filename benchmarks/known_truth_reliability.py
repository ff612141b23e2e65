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
    diagram is left out; the caller says so). ``models`` as `saved_models` gives them."""
    rows: list[tuple[str, list[Image.Image]]] = []
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
            rows.append((f"K = {k}: accuracy per confidence bin on the occluded pixels (mean "
                         f"softmax of {mean_of} samples)", panels))  # fmt: skip
    if not rows:
        raise NoKeptDiagram("none of these runs kept a reliability diagram in its result.json "
                         "(runs scored before the diagram was kept have none)")  # fmt: skip
    width = max(len(panels) for _, panels in rows) * PANEL
    canvas = Image.new("RGB", (width, len(rows) * (PANEL + _TITLE)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (title, panels) in enumerate(rows):
        top = index * (PANEL + _TITLE)
        draw.text((4, top + 3), title, fill="black")
        for column, panel in enumerate(panels):
            canvas.paste(panel, (column * PANEL, top + _TITLE))
    return canvas, shown
