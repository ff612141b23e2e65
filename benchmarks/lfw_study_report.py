"""The LFW CPU study's report: each run's status and CPU time, its curve as CSV and SVG.

`collect` is what ``python benchmarks/lfw_study.py --stage collect`` runs: it only reads
the runs folder (run.json, curve.csv, done.json and the work dirs' config.yaml).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from lfw_study import (
    CURVE_FIELDS,
    DONE,
    RUN_RECORD,
    STUDY,
    StudyError,
    _now,
    _read_json,
    _write_json,
    read_curve,
)


def _live_cpu(pid: int | None) -> tuple[float, str] | None:
    """CPU seconds and process state (R, S, T: stopped...) of a live child of this study
    (None when it is gone)."""
    try:
        if pid is None or b"lfw_study.py" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), fields[0]


def _max_steps(run_dir: Path, configs: list[str]) -> int | None:
    import yaml

    for name in reversed(configs):
        path = run_dir / name / "config.yaml"
        if path.is_file():
            return int(yaml.safe_load(path.read_text())["train"]["max_steps"])
    return None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One run's state: status, steps, CPU time (curve and spent) and its curve so far."""
    record, rows = _read_json(run_dir / RUN_RECORD), read_curve(run_dir)
    done = _read_json(run_dir / DONE)
    calls_cpu, running = 0.0, ""
    for call in record["calls"]:
        live = None if "cpu_s" in call else _live_cpu(call.get("pid"))
        if live is not None:
            running = "paused (its process is stopped)" if live[1] == "T" else "running"
        calls_cpu += call.get("cpu_s") or (live[0] if live else 0.0)
    curve_cpu = rows[-1]["cpu_s"] if rows else 0.0
    accuracies = [r["pixel_accuracy"] for r in rows if r["phase"] == record["configs"][-1]]
    return {
        "recipe": record["recipe"],
        "configs": record["configs"],
        "commit": record["commit"],
        "status": "finished" if done else (running or "in progress (no process)"),
        "max_steps": _max_steps(run_dir, record["configs"]),
        "step": rows[-1]["step"] if rows else 0,
        "cpu_s_curve": curve_cpu,
        # killed calls leave no rusage: their trained part is in the curve's CPU time
        "cpu_s_spent": round(max(calls_cpu, curve_cpu), 1),
        "calls": len(record["calls"]),
        "last_pixel_accuracy": accuracies[-1] if accuracies else None,
        "best_pixel_accuracy": max(accuracies) if accuracies else None,
        "curve": rows,
    }


def _write_curves_csv(path: Path, summaries: list[dict[str, Any]]) -> None:
    from cvae_seg.io import atomic_write_text

    lines = [",".join(["recipe", *CURVE_FIELDS])]
    for summary in summaries:
        for row in summary["curve"]:
            lines.append(",".join([summary["recipe"], *(str(row[k]) for k in CURVE_FIELDS)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def curves_svg(summaries: list[dict[str, Any]], width: int = 640, height: int = 400) -> str:
    """Validation pixel accuracy against CPU-hours, one line per run, as an SVG picture
    (written by hand: matplotlib is not a dependency). Hollow points: validated at 64 px."""
    points = [(r["cpu_s"] / 3600, r["pixel_accuracy"]) for s in summaries for r in s["curve"]]
    x_max = 0.25 * math.ceil(max([x for x, _ in points] + [0.25]) / 0.25)
    y_min = min([y for _, y in points] + [90.0])
    y_min = 5 * int(y_min // 5)
    left, right, top, bottom = 60, 170, 20, 50

    def xy(x: float, y: float) -> tuple[float, float]:
        px = left + (width - left - right) * x / x_max
        py = top + (height - top - bottom) * (100 - y) / (100 - y_min)
        return round(px, 1), round(py, 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" '
             f'fill="white"/>']  # fmt: skip
    for k in range(5):
        x, y = x_max * k / 4, y_min + (100 - y_min) * k / 4
        gx, _ = xy(x, 100)
        _, gy = xy(0, y)
        parts.append(f'<text x="{gx}" y="{height - bottom + 15}" text-anchor="middle">'
                     f"{x:.2f}</text>")  # fmt: skip
        parts.append(f'<text x="{left - 5}" y="{gy + 4}" text-anchor="end">{y:.1f}</text>')
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{gy}" y2="{gy}" '
                     f'stroke="#ddd"/>')  # fmt: skip
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
                 f'text-anchor="middle">CPU-hours (one thread)</text>')  # fmt: skip
    parts.append(f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
                 f'text-anchor="middle">validation pixel accuracy (%)</text>')  # fmt: skip
    for index, summary in enumerate(summaries):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = [(xy(r["cpu_s"] / 3600, r["pixel_accuracy"]), r["size"]) for r in summary["curve"]]
        if coords:
            line = " ".join(f"{px},{py}" for (px, py), _ in coords)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}"/>')
        for (px, py), size in coords:
            fill = colour if size >= 128 else "white"
            parts.append(f'<circle cx="{px}" cy="{py}" r="3" fill="{fill}" stroke="{colour}"/>')
        ly = top + 16 * index + 10
        parts.append(f'<text x="{width - right + 10}" y="{ly}" fill="{colour}">'
                     f"{summary['recipe']}</text>")  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _choice(runs: Path, summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The declared rule applied to the recipes (`lfw_study_table.choose_recipe`), once every
    recipe has finished; None before."""
    from lfw_study_table import LAST_VALIDATIONS, TIE_POINTS, choose_recipe, recipe_scores

    if any(s["status"] != "finished" for s in summaries) or len(summaries) < 2:
        return None
    try:
        scores = recipe_scores(runs)
    except StudyError:
        return None
    rule = f"mean of the last {LAST_VALIDATIONS} validations; within {TIE_POINTS} the cheaper"
    return {"recipe": choose_recipe(scores), "rule": rule, "scores": scores}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """The curves and costs of every run in RUNS, written to --out."""
    runs = Path(args.runs)
    summaries = [run_summary(d) for d in sorted(runs.iterdir()) if (d / RUN_RECORD).is_file()]
    result = {
        "date": _now(),
        "study": _read_json(runs / STUDY),
        "split": "val",
        "metric": "validation pixel accuracy at the recipe's final size (128 px)",
        "cpu_hours_spent": round(sum(s["cpu_s_spent"] for s in summaries) / 3600, 3),
        "runs": summaries,
        "choice": _choice(runs, summaries),
    }
    if args.out:
        _write_json(Path(args.out), result)
    if args.curves_csv:
        _write_curves_csv(Path(args.curves_csv), summaries)
    if args.plot:
        from cvae_seg.io import atomic_write_text

        atomic_write_text(args.plot, curves_svg(summaries))
    for s in summaries:
        print(
            f"{s['recipe']}: {s['status']}, step {s['step']}/{s['max_steps']}, "
            f"{s['cpu_s_curve'] / 3600:.2f} CPU-h trained ({s['cpu_s_spent'] / 3600:.2f} spent), "
            f"last val pixel accuracy {s['last_pixel_accuracy']}"
        )
    print(f"CPU-hours spent: {result['cpu_hours_spent']}")
    return result


# --------------------------------------------------------------- the test-split summary
def _cell(stat: dict[str, Any], digits: int = 2) -> str:
    error = stat["stderr"]
    return f"{stat['mean']:.{digits}f}" + ("" if error is None else f" ± {error:.{digits}f}")


def _models_table(models: dict[str, Any], estimators: dict[str, str]) -> list[str]:
    """One row per model: mean ± standard error over seeds of each metric, per-class IoU."""
    classes = list(next(iter(models.values()))["iou"])
    lines = [
        "| model | seeds | pixel acc. (%) | class acc. (%) | mean IoU (%) | "
        + " | ".join(f"IoU {name} (%)" for name in classes)
        + " | -CLL (nats) | estimator | ECE | training per run |",
        "|---|---|---|---|---|" + "---|" * len(classes) + "---|---|---|---|",
    ]
    for row, entry in models.items():
        cells = [_cell(entry[k]) for k in ("pixel_accuracy", "class_accuracy", "mean_iou")]
        cells += [_cell(entry["iou"][name]) for name in classes]
        cells += [_cell(entry["nll"]), estimators[row], _cell(entry["ece"], 4)]
        cells.append(_cost_cell(entry))
        lines.append(f"| {row} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    return lines


def _cost_cell(entry: dict[str, Any]) -> str:
    """CPU-hours per run on one thread; the seeds trained on a GPU apart, in minutes."""
    cells = [] if entry["cpu_hours"] is None else [f"{entry['cpu_hours']:.2f} CPU-h"]
    gpu = entry.get("gpu")
    if gpu:
        seeds = ", ".join(map(str, gpu["seeds"]))
        cells.append(f"{gpu['minutes']:.1f} min on an {gpu['device']} (seed {seeds})")
    return "; ".join(cells)


def _iou_goal_line(name: str, goal: dict[str, Any]) -> str:
    row, seeds = name.split(" mean IoU")[0], goal["seeds"]
    if goal["stderr"] is None:
        verdict = "no standard error (no row has two seeds)"
    else:
        ahead = "ahead" if goal["ahead_by_more_than_a_stderr"] else "not ahead"
        verdict = (f"standard error {goal['stderr']:.2f} (the seeds' spread pooled over the "
                   f"rows with several): {ahead} by more than a standard error")  # fmt: skip
    return (f"- Mean IoU of {row} minus CNN (msc, NI)'s: {goal['gap']:+.2f} points "
            f"({seeds[1]} and {seeds[0]} seeds); {verdict}.")  # fmt: skip


def _goal_lines(goals: dict[str, Any]) -> list[str]:
    """The goals in words, each with the numbers that decide it."""
    lines = []
    for name, goal in goals.items():
        if goal is None:
            lines.append(f"- {name}: not measured (a row it needs is missing).")
        elif name == "best_pixel_accuracy":
            verdict = "at or above" if goal["at_least_95"] else "below"
            lines.append(f"- The row best on validation, {goal['model']} "
                         f"({len(goal['seeds'])} seed(s)): test pixel accuracy "
                         f"{_cell({'mean': goal['value'], 'stderr': goal['stderr']})}%, "
                         f"{verdict} 95.0%.")  # fmt: skip
        elif name.startswith("cvae_nll_over_cnn"):
            noise = ", NI" if name.endswith("_NI") else ""
            verdict = "at most" if goal["at_most_a_third"] else "more than"
            lines.append(f"- -CLL of CVAE (msc{noise}) over CNN (msc{noise})'s: "
                         f"{goal['ratio']:.3f}, {verdict} a third ({goal['seeds'][0]} and "
                         f"{goal['seeds'][1]} seed(s)).")  # fmt: skip
        else:
            lines.append(_iou_goal_line(name, goal))
    return lines


def _table4_lines(table4: dict[str, Any]) -> list[str]:
    return [
        f"Table 4 (test split): accuracy (%) on the dropped pixels; "
        f"{table4['rows']['cvae']} against {table4['rows']['gdnn']}.",
        "",
        "| block | drop | GDNN | CVAE plain | CVAE iterative |",
        "|---|---|---|---|---|",
        *(f"| {g['block_size']} | {g['drop_prob']:.2f} | {g['plain']:.2f} | {c['plain']:.2f} | "
          f"{c['iterative']:.2f} |" for g, c in zip(table4["gdnn"], table4["cvae"], strict=True)),
    ]  # fmt: skip


def _sample_score_lines(sampled: dict[str, Any]) -> list[str]:
    """GED and HM-IoU of each seed-0 run's samples against the one annotation per image."""
    scored = {row: scores for row, scores in sampled.items() if scores}
    if not scored:
        return []
    count = next(iter(scored.values()))["samples"]
    lines = [
        f"Samples against the one annotation of each test image (seed 0, S = {count}; "
        "GED is D^2, lower is better; HM-IoU in [0, 1], higher is better; NCC: PHiSeg's "
        "S_NCC of the per-pixel uncertainty against the error, in [-1, 1], higher is better, "
        "from another seed where seed 0's checkpoint was lost, – where none is left; ± the "
        "standard error over images):",
        "",
        f"| model | GED, S = {count} | HM-IoU, S = {count} | NCC, S = {count} |",
        "|---|---|---|---|",
    ]
    for row, scores in scored.items():
        ged, iou, ncc = (
            _cell({"mean": scores[key], "stderr": scores[f"{key}_stderr"]}, 3)
            if key in scores else "–"
            for key in (f"ged_{count}", f"hm_iou_{count}", "ncc")
        )  # fmt: skip
        if "ncc_seed" in scores:  # the seed-0 run had lost its checkpoint
            ncc += f" (seed {scores['ncc_seed']})"
        lines.append(f"| {row} | {ged} | {iou} | {ncc} |")
    missing = [row for row, scores in sampled.items() if not scores]
    if missing:
        lines += ["", f"Not scored (restored without a checkpoint): {', '.join(missing)}."]
    return lines


def summary_markdown(summary: dict[str, Any]) -> str:
    """Table 2-3 (test split, mean ± standard error over seeds), our recipe's and the peers'
    rows apart, the goals and Table 4."""
    from lfw_study_table import side_rows

    estimators = {r["model"]: r["nll_estimator"] for r in summary["records"]}
    side = side_rows()
    ours = {row: entry for row, entry in summary["models"].items() if row not in side}
    beside = {row: entry for row, entry in summary["models"].items() if row in side}
    lines = _models_table(ours, estimators) if ours else []
    if beside:
        lines += ["", "Our CVAE recipe and the peers (issue 20), each on the same backbone, "
                  "data and training:", ""]  # fmt: skip
        lines += _models_table(beside, estimators)
    lines += ["", f"Test split, scored once; S = {summary['likelihood_samples']} for the "
              "estimated -CLL; ECE (15 bins) of the mean of 16 samples' softmax. "
              f"Command: `{summary['command']}`; {summary['hardware']}; "
              f"{summary['date']}."]  # fmt: skip
    if summary["unfinished"]:
        lines.append(f"Not finished yet: {', '.join(summary['unfinished'])}.")
    if summary.get("sample_scores"):
        lines += ["", *_sample_score_lines(summary["sample_scores"])]
    lines += ["", "Goals (Table 2's rows), as measured:", "", *_goal_lines(summary["goals"])]
    if summary.get("table4"):
        lines += ["", *_table4_lines(summary["table4"])]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """The summary as JSON at ``path`` and as markdown beside it."""
    from cvae_seg.io import atomic_write_text

    _write_json(path, summary)
    atomic_write_text(path.with_suffix(".md"), summary_markdown(summary))
    print(summary_markdown(summary))
