"""``visualize --compare``: the other models drawn beside the checkpoint on the same images,
each named and checked before any drawing."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from cvae_seg.cli.errors import UserError, one_line, raised_reading_input

log = logging.getLogger(__name__)

_RUN_FILES = ("best", "last")  # a training run's checkpoints, named by the run's folder
_IMAGE_SETTINGS = ("size", "mean", "std")  # what the drawn inputs are made with


def load_flagged(flag: str, checkpoint: str | os.PathLike, device: Any) -> tuple[Any, Any, list]:
    """`load_trained` for a flag's checkpoint: a problem with the file is one line that
    names the flag (the loader's own hints speak of the positional checkpoint)."""
    from cvae_seg.training import load_trained

    try:
        return load_trained(checkpoint, device)
    except (ValueError, TypeError, OSError) as error:
        if not raised_reading_input(error):
            raise
        raise UserError(f"{flag} {checkpoint}: {one_line(error)}") from None


def check_overrides_are_not_checkpoints(args: argparse.Namespace) -> None:
    """``--compare a b`` gives ``b`` to the overrides (one checkpoint per flag): say so
    before any model loads, rather than that ``b`` is not ``key.sub=value``."""
    for override in args.overrides:
        if "=" not in override and Path(override).exists():
            raise UserError(
                f"{override} is not a key.sub=value override: --compare takes one checkpoint, "
                f"so give it a --compare of its own (--compare {override})"
            )


def row_names(checkpoints: list[str | os.PathLike]) -> list[str]:
    """Row names: each run's folder (NAME/best.pt, NAME/last.pt, NAME/pretrained) or the
    file's name without its suffix, with as many parent folders as it takes to tell them
    apart (two checkpoints of one run: their file names too). The same file given twice is
    refused."""
    resolved = [Path(checkpoint).resolve() for checkpoint in checkpoints]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise UserError(
                f"--compare {checkpoints[index]}: this model is given twice; compare others"
            )
    short = [_run_named(path).parts for path in resolved]
    full = [path.with_suffix("").parts if path.is_file() else path.parts for path in resolved]
    for parts, first in ((short, 1), (full, 2)):  # a run's two files: with the run's name
        for depth in range(first, max(map(len, parts)) + 1):
            names = ["/".join(p[-depth:]) for p in parts]
            if len(set(names)) == len(names):
                return names
    return [str(path) for path in resolved]


def _run_named(path: Path) -> Path:
    if path.name == "pretrained" or (path.is_file() and path.stem in _RUN_FILES):
        return path.parent
    return path.with_suffix("") if path.is_file() else path


def compared_models(
    args: argparse.Namespace, device: Any, config: Any, classes: list[str], model: Any
) -> dict[str, Any]:
    """The model and the --compare models by row name; a compared model trained on other
    classes or other image settings is refused (its row would show other inputs)."""
    names = row_names([args.checkpoint, *args.compare])  # a repeat refused before loading
    models = [model]
    for checkpoint in args.compare:
        other, trained, their_classes = load_flagged("--compare", checkpoint, device)
        _check_alike(checkpoint, trained, list(their_classes), config, list(classes))
        models.append(other)
    return dict(zip(names, models, strict=True))


def _check_alike(
    checkpoint: str | os.PathLike, trained: Any, their_classes: list, config: Any, classes: list
) -> None:
    theirs, ours = trained.data.model_dump(), config.data.model_dump()
    differs = [
        f"data.{key}={theirs[key]!r} (the model's: {ours[key]!r})"
        for key in _IMAGE_SETTINGS
        if theirs[key] != ours[key]
    ]
    if their_classes != classes:
        differs.insert(0, f"classes {their_classes} (the model's: {classes})")
    if differs:
        raise UserError(f"--compare {checkpoint}: trained with {'; '.join(differs)}")
    if theirs["dataset"] != ours["dataset"]:  # allowed, as for the checkpoint itself
        log.warning("--compare %s was trained on data.dataset=%r; drawn on %r", checkpoint,
                    theirs["dataset"], ours["dataset"])  # fmt: skip
