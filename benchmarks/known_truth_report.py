"""The known-truth benchmark's report: its tables, the merge of separate jobs, its protocol.

benchmarks/known_truth.py writes OUT.json (every run's numbers) and OUT.md (the tables made
here); ``--merge`` joins the JSON of seeds run as separate jobs. The protocol a report was
made under (split, hit distance, NLL estimator, held-out layouts, annotators, GED) is stated
in its footnote and JSON; reports written before the protocol of issue 20 carry none of these
keys and read as what they were: the test split, a miss beyond 10% of the occluded pixels,
the lower of the two NLL estimates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import mean_stderr

OBJECTIVES = ("cnn", "gdnn", "gsnn", "cvae", "hybrid")  # the CVAE head's objectives
PEERS = ("probunet", "ssn", "mc_dropout", "ensemble")  # the other heads, one model each
HEADS = ("cvae", *PEERS)
MODELS = (*OBJECTIVES, *PEERS)

# A sample is a hit only when its argmax map is within HIT_DISTANCE pixels (Hamming) of a
# candidate. Two candidates differ in at least one whole grid cell (16 px at 32 px), so a
# hit is never ambiguous, and a sample that hedges half a cell (8 px) is a miss.
HIT_DISTANCE = 2
SPLITS = ("val", "test", "test2")
NLL_PROTOCOL = (
    "declared estimator: importance sampling for models with a recognition net, Monte Carlo "
    "for other stochastic ones, exact for deterministic ones and the ensemble"
)

# Reports before the protocol of issue 20: what they used, for their tables and merges.
ESTIMATORS = {
    "cnn": ("exact",),
    "gdnn": ("exact",),
    "gsnn": ("monte_carlo",),
    "cvae": ("importance", "monte_carlo"),
    "hybrid": ("importance", "monte_carlo"),
}
MISS_FRACTION = 0.1  # then: a sample farther than this share of the occluded pixels missed
LEGACY_NLL_PROTOCOL = "the lower of importance sampling and Monte Carlo (not declared)"

# What the GED column means: the convention of `cvae_seg.metrics.generalized_energy_distance`.
# Reports written before it (no "ged_convention" key) took E d(s, s') over distinct pairs.
GED_CONVENTION = "D^2, all ordered pairs, self-pairs included"
LEGACY_GED_CONVENTION = "D^2, sample pairs without self-pairs"


def legacy_tightest_nll(result: dict, objective: str) -> float:
    """The lower of an objective's NLL estimates: the headline of reports made before the
    declared estimator (the lower of two upper bounds flatters, so it is no longer used)."""
    return min(result[f"nll_{method}"] for method in ESTIMATORS[objective])


def protocol(report: dict) -> dict:
    """The protocol a report was made under; reports before issue 20's read as theirs."""
    legacy = "split" not in report
    return {
        "split": report.get("split", "test"),
        "hits": (
            f"nearest candidate, a miss beyond {report['miss_fraction']:.0%} of the occluded "
            "pixels" if legacy else
            f"nearest candidate within {report['hit_distance']} pixels, else a miss"
        ),
        "nll": report.get("nll_protocol", LEGACY_NLL_PROTOCOL),
        "holdout": report.get("holdout", 0.0),
        "annotators": report.get("annotators", 1),
        "ged": report.get("ged_convention", LEGACY_GED_CONVENTION),
    }  # fmt: skip


def ged_convention(report: dict) -> str:
    """The GED convention a report was written with (reports before 1.0 carry none)."""
    return protocol(report)["ged"]


def _cell(tests: list[dict], key: str, digits: int = 2) -> str:
    values = [t[key] for t in tests if key in t and t[key] is not None]
    if not values:
        return ""
    mean, stderr = mean_stderr(values)
    if math.isnan(stderr):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def _with_floor(tests: list[dict], key: str, floor: str) -> str:
    cell = _cell(tests, key)
    if cell and floor in tests[0]:
        return f"{cell} ({tests[0][floor]:.3f})"
    return cell


def _groups(report: dict, part: str | None = None):
    """(K, model, the runs' test dicts, or their ``part``) in table order."""
    names = [*MODELS, *dict.fromkeys(r["objective"] for r in report["runs"])]
    for k in report["tasks"]:
        for model in dict.fromkeys(names):
            runs = [r for r in report["runs"] if r["k"] == k and r["objective"] == model]
            tests = [r["test"] if part is None else r["test"].get(part) for r in runs]
            if tests and all(t is not None for t in tests):
                yield k, model, tests


def _main_table(report: dict) -> list[str]:
    lines = [
        "| K | model | NLL (estimator) | NLL, Monte Carlo | true NLL (H) | "
        "NLL / true NLL | TV per input (floor) | TV pooled (floor) | GED | visible acc. % | "
        "KL (share of -ELBO) | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    legacy = "split" not in report
    for k, model, tests in _groups(report):
        test0 = tests[0]
        if legacy:  # the first column was IS (or exact); the ratio the lower of the two
            method = "exact" if "nll_exact" in test0 else ESTIMATORS[model][0]
        else:
            method = test0["nll_estimator"]
        key = "nll" if "nll" in test0 else f"nll_{method}"
        secondary = _cell(tests, "nll_monte_carlo") if method != "monte_carlo" else ""
        kl = f"{_cell(tests, 'kl')} ({_cell(tests, 'kl_share')})" if "kl" in test0 else ""
        cells = [str(k), model, f"{_cell(tests, key)} ({method.replace('_', ' ')})", secondary,
                 f"{_cell(tests, 'true_nll')} ({test0['entropy']:.2f})", _cell(tests, "nll_ratio"),
                 _with_floor(tests, "tv_mean", "tv_floor_mean"),
                 _with_floor(tests, "tv_pooled", "tv_floor_pooled"), _cell(tests, "ged", 3),
                 _cell(tests, "visible_accuracy"), kl,
                 _train_minutes(report, k, model)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _train_minutes(report: dict, k: int, model: str) -> str:
    """Mean ± standard error of the runs' training minutes (reports before 1.0 lack them)."""
    runs = [r for r in report["runs"] if r["k"] == k and r["objective"] == model]
    return _cell([{"minutes": r["train_seconds"] / 60} for r in runs if "train_seconds" in r],
                 "minutes", 1)  # fmt: skip


def _annotator_table(report: dict, counts: list[int]) -> list[str]:
    """GED and HM-IoU against the annotators, NCC and ECE (only where any run has them)."""
    keys = [f"ged_{s}" for s in counts] + [f"hm_iou_{s}" for s in counts]
    keys += ["ncc", "ece", "ece_occluded"]
    if not any(key in t for _, _, tests in _groups(report) for t in tests for key in keys):
        return []
    header = [f"GED, S={s}" for s in counts] + [f"HM-IoU, S={s}" for s in counts]
    floors = report.get("ece_occluded_floor", {})  # reports before it lack the floor
    header += ["NCC", "ECE", "ECE, occluded" + (" (perfect sampler)" if floors else "")]
    lines = ["", "| K | model | " + " | ".join(header) + " |",
             "|---|---|" + "---|" * len(header)]  # fmt: skip
    for k, model, tests in _groups(report):
        cells = [_cell(tests, key, 3) for key in keys]
        if cells[-1] and str(k) in floors:
            cells[-1] += f" ({floors[str(k)]:.3f})"
        lines.append(f"| {k} | {model} | " + " | ".join(cells) + " |")
    return lines


def _held_out_table(report: dict) -> list[str]:
    """The test images whose layout training never saw, beside the others."""
    rows = []
    for part, name in (("held_out", "held-out layouts"), ("seen", "layouts seen in training")):
        for k, model, tests in _groups(report, part):
            cells = [str(k), model, name, _cell(tests, "images", 0), _cell(tests, "nll_ratio"),
                     _with_floor(tests, "tv_mean", "tv_floor_mean"), _cell(tests, "ged", 3),
                     _cell(tests, "visible_accuracy")]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "| K | model | test images | count | NLL / true NLL | TV per input (floor) | "
            "GED | visible acc. % |", "|---|---|---|---|---|---|---|---|", *rows]  # fmt: skip


def _footnote(report: dict) -> str:
    budget, rules = report["budget_settings"], protocol(report)
    legacy = "split" not in report
    ratio = ("the lower (tighter) of IS and MC, exact for cnn and gdnn" if legacy else
             "the declared estimator's NLL over the mean true NLL of the same pairs "
             "(-log pi of each pair's drawn shape; not H, which is its expectation)")  # fmt: skip
    return (
        f"Protocol: the {rules['split']} split, {budget['test']} pairs per task; mean ± "
        f"standard error over seeds {report['seeds']}; {budget['steps']} updates of batch "
        f"{budget['batch']} on {budget['train']} training pairs per model. NLL in nats per image "
        f"({rules['nll']}; IS: S={budget['is']}, MC: S={budget['mc']}); NLL / true NLL: "
        f"{ratio}. TV and GED from {budget['mode_samples']} samples on each of the first "
        f"{budget['mode_inputs']} inputs (GED from the first {budget['ged_samples']}); hits: "
        f"{rules['hits']}; in brackets the expected TV of a perfect sampler with as many "
        f"samples (`cvae_seg.metrics.total_variation_floor`), where the report has it. "
        f"GED: {rules['ged']}, d = 1 - IoU of the foreground, the truth's terms exact over the "
        f"weighted candidates. {_ece_note(report)}Held-out layouts: {rules['holdout']:.0%} "
        f"of the 336; annotators per image: {rules['annotators']}. Command: `{report['command']}`; "
        f"{report['hardware']}, torch {report['torch']}, {report['date']}, "
        f"{report['seconds'] / 60:.1f} minutes in all"
        + (" (summed over the merged jobs)." if "merged_from" in report else ".")
    )


def _ece_note(report: dict) -> str:
    """The footnote's sentence on the ECE floor, where the report has one."""
    if not report.get("ece_occluded_floor"):
        return ""
    samples = report["budget_settings"]["calibration_samples"]
    return (f"ECE of the mean softmax of {samples} samples, 15 bins; in brackets, on the "
            f"occluded pixels, the mean ECE of a perfect sampler's {samples} exact draws "
            "(20 seeded repeats; `known_truth_ece_floor.py`). ")  # fmt: skip


def markdown(report: dict) -> str:
    """The report's tables (mean ± standard error over seeds) and the footnote."""
    counts = report["budget_settings"].get("annotator_samples", [16, 100])
    lines = [*_main_table(report), *_annotator_table(report, counts), *_held_out_table(report)]
    lines += ["", _footnote(report)]
    if report.get("failed"):  # kept as failed by known_truth_runs, left out of the means
        failures = [f"{failure['run']}: {failure['error']}" for failure in report["failed"]]
        lines += ["", f"Failed runs (left out of the means): {'; '.join(failures)}."]
    if report.get("unfinished"):
        lines += ["", f"Not finished yet: {', '.join(report['unfinished'])}."]
    if report.get("not_rescored"):  # known_truth_rescore: runs kept without a checkpoint
        lines += ["", f"Not rescored: {', '.join(report['not_rescored'])}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    """OUT.json and its markdown tables OUT.md, each written atomically."""
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(out.with_suffix(".md"), markdown(report))


def merge_reports(paths: list[Path]) -> dict:
    """One report from several runs of this script (seeds run as parallel jobs).

    The reports must share the budget's settings and the protocol (split, hits, NLL
    estimator, held-out layouts, annotators, GED); a (K, model, seed) may appear only once.
    Reports made before the declared estimator keep their headline, the lower of the two
    estimates, recomputed so that the oldest (which took IS) read as the rest of them.
    """
    reports = [json.loads(Path(path).read_text()) for path in paths]
    first = reports[0]
    for path, report in zip(paths, reports, strict=True):
        if report["budget_settings"] != first["budget_settings"]:
            raise ValueError(f"{path}: budget_settings {report['budget_settings']} differs "
                             f"from {paths[0]}'s")  # fmt: skip
        for key, value in protocol(report).items():
            if value != protocol(first)[key]:
                name, theirs = ("GED" if key == "ged" else key), protocol(first)[key]
                raise ValueError(f"{path}: its {name} ({value}) is not {paths[0]}'s "
                                 f"({theirs}); rerun one of them to merge")  # fmt: skip
    runs, seen = [], set()
    for path, report in zip(paths, reports, strict=True):
        for run in report["runs"]:
            key = (run["k"], run["objective"], run["seed"])
            if key in seen:
                raise ValueError(f"{path}: K={key[0]} {key[1]} seed {key[2]} is already merged")
            seen.add(key)
            test = run["test"]
            if "split" not in report:
                test["nll_ratio"] = legacy_tightest_nll(test, run["objective"]) / test["true_nll"]
            runs.append(run)

    def joined(key: str) -> str:
        return "; ".join(dict.fromkeys(str(report[key]) for report in reports))

    return {
        **first,
        **{key: joined(key) for key in ("command", "date", "hardware", "torch")},
        "tasks": sorted({run["k"] for run in runs}),
        "seeds": sorted({run["seed"] for run in runs}),
        "seconds": sum(report["seconds"] for report in reports),
        "merged_from": [str(path) for path in paths],
        "ece_occluded_floor": {
            k: floor
            for report in reports
            for k, floor in report.get("ece_occluded_floor", {}).items()
        },
        "failed": [failure for report in reports for failure in report.get("failed", [])],
        "unfinished": [name for report in reports for name in report.get("unfinished", [])],
        "runs": runs,
    }
