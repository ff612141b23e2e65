"""The LFW CPU study at 128 px: resumable recipe runs pinned to one commit, and their curves.

    python benchmarks/lfw_study.py --stage recipes --data-root DATA/lfw --runs RUNS
        [--recipes r18_b16 ...] [--jobs 2] [--commit REV] [--allow-commit-change]
    python benchmarks/lfw_study.py --stage collect --runs RUNS [--out results/lfw128_recipes.json]
    python benchmarks/lfw_study.py --stage table --data-root DATA/lfw --runs RUNS2
        --recipe NAME [--rows ROW ...] [--seeds 0 1 2] [--dataset lfw|cub] [--cache-dir C]
    python benchmarks/lfw_study.py --stage score --data-root DATA/lfw --runs RUNS2
        [--summary SUMMARY.json]  (default: the summary JSON in results/)
    python benchmarks/lfw_study.py --stage figure --data-root DATA/lfw --runs RUNS2
        [--rows ROW ...] [--figure PNG]  (every model on the same test images)

``recipes`` trains every recipe (configs/lfw128_cpu_<recipe>.yaml; the progressive recipe
first trains its 64 px config) into RUNS/<recipe>/, at most ``--jobs`` at a time, each in a
child process with one thread. The same command again skips finished runs (RUNS/<recipe>/
done.json, written atomically at the end) and resumes unfinished ones from their last.pt,
bit for bit. Runs train from a git worktree of one commit (RUNS/worktrees/<sha>, outside
the repo; the commit is recorded in RUNS/study.json and in each run's run.json), so work on
the main checkout does not change a running study; a run is not resumed at another commit
unless ``--allow-commit-change`` says so.

Each run records its learning curve (RUNS/<recipe>/curve.csv: validation metrics against
the process CPU seconds and wall seconds of training so far, carried across resumes) and
every call's CPU time (the child's rusage) in run.json. ``collect`` gathers the curves and
the CPU spent into one JSON file. Only the validation split is scored in these stages.

``table`` trains Table 2's rows with the recipe chosen on validation, the same way (one
resumable, pinned run per row and seed, RUNS2/table/<row>/seed<k>); ``score`` scores each
finished one on the test split once, then Table 4, and writes the summary
(benchmarks/lfw_study_table.py). ``--dataset cub`` runs the same on CUB. ``figure`` draws
each row from its lowest seed that finished with its checkpoint at hand, side by side on the
same test images (benchmarks/lfw_study_figure.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fcntl
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kept_runs import KeptFileError, read_json

ROOT = Path(__file__).resolve().parents[1]
# recipe -> the configs (configs/<name>.yaml) it trains in turn, each resuming the previous
RECIPES: dict[str, tuple[str, ...]] = {
    "r18_b16": ("lfw128_cpu_r18_b16",),
    "r18_b16_cosine": ("lfw128_cpu_r18_b16_cosine",),
    "narrow_b16": ("lfw128_cpu_narrow_b16",),
    "progressive": ("lfw128_cpu_progressive_64px", "lfw128_cpu_progressive"),
}
CURVE_FIELDS = [
    "step",
    "phase",
    "size",
    "cpu_s",
    "wall_s",
    "pixel_accuracy",
    "class_accuracy",
    "mean_iou",
    "foreground_iou",
]
PAUSED, LOCKED = 3, 4  # exit codes of a child: stopped by --max-steps-per-call; run busy
# a run's files: its record (recipe, settings, commits), validation curve, and end summary;
# the study's pinned commit
RUN_RECORD, CURVE, DONE, STUDY = "run.json", "curve.csv", "done.json", "study.json"


@dataclass(frozen=True)
class Run:
    """One training run of the study: RUNS/<name>, trained with a recipe's configs plus
    ``overrides`` (a recipe run is named after its recipe; a table run adds the row's
    objective, noise, losses and seed)."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    from cvae_seg.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _read_json(path: Path) -> Any:
    return read_json(path)


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


# ------------------------------------------------------------------------ child: one run
class _Pause(Exception):
    """Raised after a checkpoint once a call has trained its --max-steps-per-call."""


def read_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The run's curve rows (a row cut short by a kill is dropped)."""
    path = run_dir / CURVE
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows.append({k: (row[k] if k == "phase" else float(row[k])) for k in CURVE_FIELDS})
            except (TypeError, ValueError):
                continue
    for row in rows:
        row["step"], row["size"] = int(row["step"]), int(row["size"])
    return rows


class _CurveRecorder:
    """Appends a curve row after every checkpoint that follows a validation."""

    def __init__(self, run_dir: Path, stop_after: int | None) -> None:
        self.path = run_dir / CURVE
        rows = read_curve(run_dir)
        self.start_step = rows[-1]["step"] if rows else 0
        self.base_cpu = rows[-1]["cpu_s"] if rows else 0.0  # + this process's CPU time
        self.base_wall = rows[-1]["wall_s"] if rows else 0.0
        self.started = time.perf_counter()
        self.stop_step = None if stop_after is None else self.start_step + stop_after
        self.phase, self.size, self.max_steps = "", 0, 0
        lines = [",".join(CURVE_FIELDS)] + [",".join(str(r[k]) for k in CURVE_FIELDS) for r in rows]
        from cvae_seg.io import atomic_write_text

        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def saved(self, state: dict[str, Any]) -> None:
        step, metrics = int(state["step"]), state.get("metrics") or {}
        if metrics.get("step") == step:
            row = {
                "step": step,
                "phase": self.phase,
                "size": self.size,
                "cpu_s": round(self.base_cpu + time.process_time(), 1),
                "wall_s": round(self.base_wall + time.perf_counter() - self.started, 1),
            }
            row.update({k: metrics.get(k, "") for k in CURVE_FIELDS[5:]})
            with self.path.open("a") as handle:
                handle.write(",".join(str(row[k]) for k in CURVE_FIELDS) + "\n")
        if self.stop_step is not None and self.stop_step <= step < self.max_steps:
            raise _Pause(step)


def _hook_checkpoints(recorder: _CurveRecorder) -> None:
    """Call ``recorder.saved`` after each last.pt the training writes (once it is on disk)."""
    from cvae_seg.training import CheckpointSaver

    original = CheckpointSaver.save

    def save(self: Any, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original(self, state, *args, **kwargs)
        recorder.saved(state)

    CheckpointSaver.save = save  # type: ignore[method-assign]


def _phase_overrides(name: str, overrides: list[str]) -> list[str]:
    """The --set overrides for one config: KEY=VALUE for all, CONFIG:KEY=VALUE for one."""
    chosen = []
    for override in overrides:
        target, sep, _ = override.partition("=")[0].partition(":")
        if not sep:
            chosen.append(override)
        elif target == name:
            chosen.append(override.split(":", 1)[1])
    return chosen


def _phase_config(name: str, args: argparse.Namespace) -> Any:
    from cvae_seg.config import load_config

    overrides = [
        f"data.root={args.data_root}",
        f"data.cache_dir={args.cache_dir}",
        "data.num_workers=0",
        *_phase_overrides(name, args.set),
    ]
    return load_config(ROOT / "configs" / f"{name}.yaml", overrides)


def _phase_start(run_dir: Path, phases: tuple[str, ...], index: int) -> Path | None:
    """The checkpoint a phase resumes from: its own last.pt, else the previous phase's
    last.pt with the best-so-far reset (the validation size changes between phases)."""
    work = run_dir / phases[index]
    if (work / "last.pt").is_file():
        return work / "last.pt"
    if index == 0:
        return None
    from cvae_seg.training import load_checkpoint, save_checkpoint

    state = load_checkpoint(run_dir / phases[index - 1] / "last.pt")
    state.update(best=None, evals_since_best=0, metrics={})
    state.pop("version", None)
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(work / "start.pt", state)
    return work / "start.pt"


def _train_phases(args: argparse.Namespace, run_dir: Path, recorder: _CurveRecorder) -> dict:
    """Train each phase of the recipe in turn (finished phases are skipped)."""
    from cvae_seg.training import train

    phases = RECIPES[args.recipes[0]]
    result: dict[str, Any] = {}
    for index, name in enumerate(phases):
        work = run_dir / name
        done = _read_json(work / "phase_done.json")
        if done is not None:
            result = done
            continue
        config = _phase_config(name, args)
        recorder.phase, recorder.size = name, config.data.size
        recorder.max_steps = config.train.max_steps
        result = train(config, work, resume=_phase_start(run_dir, phases, index), progress=False)
        _write_json(work / "phase_done.json", result)
    return result


def _child(args: argparse.Namespace) -> int:
    """Train one run in this process (started by `_train_run`, one thread)."""
    import logging

    import torch

    import cvae_seg

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir = Path(args.runs) / (args.run_name or args.recipes[0])
    lock = (run_dir / "lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return LOCKED
    print(f"cvae_seg from {Path(cvae_seg.__file__).parent}", flush=True)
    recorder = _CurveRecorder(run_dir, args.max_steps_per_call)
    _hook_checkpoints(recorder)
    try:
        result = _train_phases(args, run_dir, recorder)
    except _Pause as pause:
        print(f"paused after step {pause.args[0]} (--max-steps-per-call)", flush=True)
        return PAUSED
    rows = read_curve(run_dir)
    summary = {
        "run": args.run_name or args.recipes[0],
        "recipe": args.recipes[0],
        "overrides": args.set,
        "finished": _now(),
        "commit": args.commit,
        "steps": result.get("step"),
        "best_pixel_accuracy": result.get("best"),
        "last": result.get("last"),
        "cpu_s": rows[-1]["cpu_s"] if rows else None,
        "wall_s": rows[-1]["wall_s"] if rows else None,
    }
    _write_json(run_dir / DONE, summary)
    return 0


# ----------------------------------------------------------------- parent: the study
class StudyError(RuntimeError):
    """A study that cannot go on as asked (commit mismatch, worktree at the wrong commit)."""


def pin_checkout(args: argparse.Namespace) -> tuple[Path, str]:
    """The folder the runs train from and its commit: a worktree of the pinned commit
    (RUNS/study.json; else --commit or HEAD), or this checkout with --no-worktree."""
    runs = Path(args.runs)
    if args.no_worktree:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=ROOT)
        return ROOT, commit + ("+dirty" if dirty else "")
    study = _read_json(runs / STUDY) or {}
    commit = _git(
        "rev-parse", "--verify", f"{args.commit or study.get('commit') or 'HEAD'}^{{commit}}"
    )
    if study.get("commit") not in (None, commit) and not args.allow_commit_change:
        raise StudyError(
            f"{runs}/study.json pins commit {study['commit']}; --commit {args.commit} "
            "differs (add --allow-commit-change to move the study)"
        )
    worktree = Path(args.worktree) if args.worktree else runs / "worktrees" / commit[:12]
    if not worktree.exists():
        worktree.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(worktree), commit)
    elif _git("rev-parse", "HEAD", cwd=worktree) != commit:
        raise StudyError(f"worktree {worktree} is not at commit {commit}")
    _write_json(runs / STUDY, {"commit": commit, "worktree": str(worktree), "pinned": _now()})
    return worktree, commit


def _open_record(run_dir: Path, run: Run, commit: str, args: argparse.Namespace) -> dict:
    """run.json of a run (new or resumed), refusing a resume at another commit or with
    another recipe or overrides."""
    record = _read_json(run_dir / RUN_RECORD)
    if record is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "run": run.name,
            "recipe": run.recipe,
            "configs": list(RECIPES[run.recipe]),
            "commit": commit,
            "created": _now(),
            "overrides": [*args.set, *run.overrides],
            "calls": [],
        }
    elif (record["recipe"], record["overrides"]) != (run.recipe, [*args.set, *run.overrides]):
        # a resume under another recipe would mix two trainings in one folder and one curve
        raise StudyError(
            f"{run_dir} was started with recipe {record['recipe']} and overrides "
            f"{record['overrides']}; this call asks for {run.recipe} and "
            f"{[*args.set, *run.overrides]}: not resumed (give the same --recipe and --set)"
        )
    elif record["commit"] != commit:
        if not args.allow_commit_change:
            raise StudyError(
                f"{run_dir} was trained at commit {record['commit']}, the study is "
                f"at {commit}: not resumed (--allow-commit-change to go on)"
            )
        record.setdefault("commit_changes", []).append(
            {"from": record["commit"], "to": commit, "at": _now()}
        )
        record["commit"] = commit
    return record


def _child_command(args: argparse.Namespace, checkout: Path, run: Run, commit: str) -> list:
    # the child is the pinned commit's copy of this script: keep these arguments compatible
    # (--run-name only where it differs from the recipe: older copies do not know it)
    command = [
        sys.executable,
        str(checkout / "benchmarks" / "lfw_study.py"),
        "--stage",
        "child",
        "--runs",
        str(Path(args.runs).resolve()),
        "--recipes",
        run.recipe,
        "--data-root",
        args.data_root,
        "--cache-dir",
        args.cache_dir,
        "--commit",
        commit,
    ]
    if run.name != run.recipe:
        command += ["--run-name", run.name]
    if args.max_steps_per_call:
        command += ["--max-steps-per-call", str(args.max_steps_per_call)]
    for override in [*args.set, *run.overrides]:
        command += ["--set", override]
    return command


def _child_env(checkout: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(checkout), NO_ALBUMENTATIONS_UPDATE="1")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _train_run(args: argparse.Namespace, checkout: Path, commit: str, run: Run) -> str:
    """Train (or resume) one run in a child process; returns what happened, in words."""
    run_dir = Path(args.runs) / run.name
    if (run_dir / DONE).is_file():
        return "finished before: skipped"
    record = _open_record(run_dir, run, commit, args)
    call: dict[str, Any] = {"commit": commit, "started": _now()}
    record["calls"].append(call)
    started = time.perf_counter()
    with (run_dir / "train.log").open("ab") as log:
        child = subprocess.Popen(
            _child_command(args, checkout, run, commit),
            cwd=checkout,
            env=_child_env(checkout),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        call["pid"] = child.pid
        _write_json(run_dir / RUN_RECORD, record)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code == LOCKED:
        record["calls"].pop()
        _write_json(run_dir / RUN_RECORD, record)
        return "busy (another process trains it): skipped"
    call.update(
        ended=_now(),
        exit_code=code,
        cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
        wall_s=round(time.perf_counter() - started, 1),
    )
    _write_json(run_dir / RUN_RECORD, record)
    words = {0: "finished", PAUSED: "paused (--max-steps-per-call)"}
    return words.get(code, f"failed with exit code {code} (see {run_dir / 'train.log'})")


def check_recipes(recipes: list[str]) -> None:
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        raise StudyError(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")


def train_runs(
    args: argparse.Namespace, runs: list[Run], finish: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Every run, ``--jobs`` at a time, from the pinned checkout, each finished one handed to
    ``finish`` (its name) in this process; returns name -> outcome."""
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    checkout, commit = pin_checkout(args)

    def one(run: Run) -> str:
        try:
            outcome = _train_run(args, checkout, commit, run)
        except StudyError as error:
            return f"refused: {error}"
        if finish is not None and outcome.startswith("finished"):
            try:
                finish(run.name)
            except Exception as error:  # one run's scoring must not stop the other runs
                traceback.print_exc()
                return f"failed after training, while scoring: {error!r}"
        return outcome

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = dict(zip([r.name for r in runs], pool.map(one, runs), strict=True))
    for name, outcome in outcomes.items():
        print(f"{name}: {outcome}", flush=True)
    return outcomes


def run_recipes(args: argparse.Namespace) -> dict[str, str]:
    """Every asked-for recipe's run; returns recipe -> outcome."""
    check_recipes(args.recipes)
    return train_runs(args, [Run(recipe, recipe) for recipe in args.recipes])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stage",
        choices=["recipes", "collect", "table", "score", "figure", "child"],
        default="recipes",
    )
    parser.add_argument("--runs", required=True, help="folder of the runs (outside the repo)")
    parser.add_argument("--data-root", help="the extracted LFW Part Labels folder")
    parser.add_argument("--cache-dir", help="decoded-split cache (default RUNS/cache)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    parser.add_argument(
        "--recipe", default="r18_b16", help="table: the recipe chosen on val, or auto (the rule)"
    )
    parser.add_argument("--recipe-runs", help="table, --recipe auto: the recipes' runs folder")
    parser.add_argument(
        "--rows", nargs="+", help="table: Table 2 rows (default all twelve); figure: rows drawn"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="table: seeds")
    parser.add_argument("--dataset", choices=["lfw", "cub"], default="lfw")
    parser.add_argument("--samples", type=int, default=50, help="score: S for the -CLL")
    parser.add_argument("--threads", type=int, default=1, help="score: torch threads")
    parser.add_argument("--device", default="cpu", help="score: the device")
    parser.add_argument("--summary", default=str(ROOT / "results" / "lfw_128_summary.json"))
    parser.add_argument(
        "--keep", metavar="DIR",
        help="table, score: copy each finished run's small files (no checkpoints) and the "
        "table's choices to DIR, and take the runs kept there as finished",
    )  # fmt: skip
    parser.add_argument("--run-name", help=argparse.SUPPRESS)  # child: RUNS/<name>
    parser.add_argument("--commit", help="commit to pin (default: study.json's, else HEAD)")
    parser.add_argument("--worktree", help="worktree folder (default RUNS/worktrees/<sha>)")
    parser.add_argument(
        "--allow-commit-change",
        action="store_true",
        help="resume runs at a commit other than the one they started at",
    )
    parser.add_argument(
        "--no-worktree",
        action="store_true",
        help="train from this checkout (tests, quick trials): not pinned",
    )
    parser.add_argument(
        "--max-steps-per-call",
        type=int,
        help="stop each run at its first checkpoint this many steps on",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (tests: a tiny network)",
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "lfw128_recipes.json"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "lfw128_models_samples.png"))
    parser.add_argument("--curves-csv", default=str(ROOT / "results" / "lfw128_recipes_curves.csv"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "benchmarks" / "lfw128_curves.svg"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.stage == "collect":
        from lfw_study_report import collect

        collect(args)
        return 0
    if not args.data_root:
        raise SystemExit("--data-root is required (the LFW Part Labels or CUB folder)")
    args.data_root = str(Path(args.data_root).resolve())
    args.cache_dir = args.cache_dir or str(Path(args.runs).resolve() / "cache")
    if args.stage == "child":
        return _child(args)
    try:
        if args.stage == "score":
            from lfw_study_table import score

            score(args)
            return 0
        if args.stage == "figure":
            from lfw_study_figure import draw_models

            draw_models(args)
            return 0
        if args.stage == "table":
            from lfw_study_table import finish_run, restore_table, table_runs

            if args.keep:
                restore_table(Path(args.keep), Path(args.runs))
            runs = table_runs(args)
            outcomes = train_runs(args, runs, lambda name: finish_run(Path(args.runs), name, args))
        else:
            outcomes = run_recipes(args)
    except (StudyError, KeptFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if all(not o.startswith(("failed", "refused")) for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
