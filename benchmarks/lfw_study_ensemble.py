"""The LFW table's ensemble trained apart (`APART_ROWS`): finished runs of one row joined
into one `DeepEnsemble` and then scored, kept and restored like any run of the table.

The ``ensemble`` head trains its members side by side in one process; at the CPU protocol
that is more hours of one thread than a machine lasts here, and a run still training when
its machine goes starts again from nothing. Trained apart, each member is a run of the table
(a ``CNN (NI)`` seed), two train at a time, and a finished one is never lost. The joined run
is a folder like a trained one (RUNS/table/<row>/seed<k>): its checkpoint is the ensemble's
weights with its members' config (``model.head=ensemble``), its curve one validation of the
ensemble, with the members' CPU time summed, so that `finish_run` scores it as it scores any.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lfw_study import (
    CURVE,
    CURVE_FIELDS,
    DONE,
    RECIPES,
    RUN_RECORD,
    _now,
    _read_json,
    _write_json,
    read_curve,
)
from lfw_study_table import (
    APART_ROWS,
    StudyError,
    _best_checkpoint,
    _run_dir,
    _test_config,
    finish_run,
    member_seeds,
    row_overrides,
)


def join_apart_rows(runs: Path, args: argparse.Namespace) -> list[str]:
    """Join every apart row's run whose members have all finished here with their
    checkpoints, and finish it (`finish_run`: scored, kept); the names of the runs joined.
    One already joined, or restored from the kept files, is left as it is."""
    joined = []
    for row in APART_ROWS:
        seed = 0
        while _members_ready(runs, row, seed) or (_run_dir(runs, row, seed) / DONE).is_file():
            run_dir = _run_dir(runs, row, seed)
            if not (run_dir / DONE).is_file():
                join_members(runs, row, seed, args)
                joined.append(run_dir.relative_to(runs).as_posix())
                finish_run(runs, joined[-1], args)
            seed += 1
    return joined


def _member_dirs(runs: Path, row: str, seed: int) -> list[Path]:
    return [_run_dir(runs, APART_ROWS[row][0], s) for s in member_seeds(row, seed)]


def _members_ready(runs: Path, row: str, seed: int) -> bool:
    return all(
        (member / DONE).is_file() and _best_checkpoint(member).is_file()
        for member in _member_dirs(runs, row, seed)
    )


def join_members(runs: Path, row: str, seed: int, args: argparse.Namespace) -> Path:
    """Write the joined run's folder from its members' best checkpoints (`_members_ready`)."""
    from cvae_seg.models import DeepEnsemble

    members = _member_dirs(runs, row, seed)
    loaded = [_test_config(_best_checkpoint(member), args) for member in members]
    config = _ensemble_config([c for _, c, _ in loaded], members, len(members))
    model = DeepEnsemble.from_models([m for m, _, _ in loaded])
    classes = loaded[0][2]
    dones = [_read_json(member / DONE) for member in members]
    recipe = dones[0]["recipe"]
    run_dir = _run_dir(runs, row, seed)
    from cvae_seg.training import save_checkpoint

    state = {"config": config.model_dump(mode="json"), "classes": classes,
             "model": model.state_dict(), "step": dones[0]["steps"]}  # fmt: skip
    save_checkpoint(run_dir / RECIPES[recipe][-1] / "best.pt", state)
    metrics = _validation(model, config, classes)
    cpu_s = sum(read_curve(member)[-1]["cpu_s"] for member in members)
    wall_s = sum(read_curve(member)[-1]["wall_s"] for member in members)
    _write_curve(run_dir, RECIPES[recipe][-1], config.data.size, dones[0]["steps"], cpu_s,
                 wall_s, metrics)  # fmt: skip
    names = [member.relative_to(runs).as_posix() for member in members]
    overrides = [*args.set, *row_overrides(row, seed, args.dataset)]
    _write_json(run_dir / RUN_RECORD, {"recipe": recipe, "configs": list(RECIPES[recipe]),
                                      "overrides": overrides, "members": names,
                                      "joined": _now(), "calls": []})  # fmt: skip
    _write_json(run_dir / DONE, {
        "run": run_dir.relative_to(runs).as_posix(), "recipe": recipe, "overrides": overrides,
        "finished": _now(), "commit": dones[0]["commit"], "steps": dones[0]["steps"],
        "best_pixel_accuracy": metrics["pixel_accuracy"], "last": metrics,
        "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1), "members": names,
    })  # fmt: skip
    return run_dir


def _ensemble_config(configs: list[Any], members: list[Path], count: int) -> Any:
    """The members' config with the ensemble head; members that differ in anything but
    their seed are refused, naming the two runs."""
    from cvae_seg.config import validate_config

    def without_seed(config: Any) -> dict[str, Any]:
        dumped = config.model_dump(mode="json")
        dumped["train"].pop("seed")
        return dumped

    for member, config in zip(members[1:], configs[1:], strict=True):
        if without_seed(config) != without_seed(configs[0]):
            raise StudyError(f"{member} and {members[0]} were trained with other settings "
                             "besides the seed: not members of one ensemble")  # fmt: skip
    from cvae_seg.models.builders import ALL_HEAD_PARAMETERS, head_parameters

    dumped = configs[0].model_dump(mode="json")
    defaults = type(configs[0].model)().model_dump(mode="json")
    for key in ALL_HEAD_PARAMETERS - head_parameters("ensemble") - {"head"}:  # the CNN's own
        if key in dumped["model"]:
            dumped["model"][key] = defaults[key]
    dumped["model"].update(head="ensemble", members=count)
    return validate_config(dumped, f"the ensemble of {', '.join(map(str, members))}")


def _validation(model: Any, config: Any, classes: list[str]) -> dict[str, float]:
    """The ensemble's validation metrics, as training's validation measures a run's."""
    from cvae_seg.training import dataset_for, make_loader
    from cvae_seg.training.validation import validate

    device = next(model.parameters()).device
    loader = make_loader(dataset_for(config, "val"), config.eval.batch_size, 0, device)
    return validate(model.eval(), config, loader, tuple(classes), device)


def _write_curve(
    run_dir: Path, phase: str, size: int, step: int, cpu_s: float, wall_s: float,
    metrics: dict[str, float],
) -> None:  # fmt: skip
    from cvae_seg.io import atomic_write_text

    row = {"step": step, "phase": phase, "size": size, "cpu_s": round(cpu_s, 1),
           "wall_s": round(wall_s, 1), **metrics}  # fmt: skip
    lines = [",".join(CURVE_FIELDS), ",".join(str(row[k]) for k in CURVE_FIELDS)]
    atomic_write_text(run_dir / CURVE, "\n".join(lines) + "\n")
