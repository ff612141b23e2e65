"""The known-truth benchmark's report: its table, the merge of separate jobs, its conventions.

benchmarks/known_truth.py writes OUT.json (every run's numbers) and OUT.md (the table made
here); ``--merge`` joins the JSON of seeds run as separate jobs. The columns' conventions
(estimators, miss threshold, GED) are stated in the table's footnote and in the JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cvae_seg.io import atomic_write_text
from cvae_seg.reporting import mean_stderr

OBJECTIVES = ("cnn", "gdnn", "gsnn", "cvae", "hybrid")
ESTIMATORS = {
    "cnn": ("exact",),
    "gdnn": ("exact",),
    "gsnn": ("monte_carlo",),
    "cvae": ("importance", "monte_carlo"),
    "hybrid": ("importance", "monte_carlo"),
}
MISS_FRACTION = 0.1  # a sample farther than this share of the occluded pixels is a miss

# What the GED column means: the convention of `cvae_seg.metrics.generalized_energy_distance`.
# Reports written before it (no "ged_convention" key) took E d(s, s') over distinct pairs.
GED_CONVENTION = "D^2, all ordered pairs, self-pairs included"
LEGACY_GED_CONVENTION = "D^2, sample pairs without self-pairs"


def tightest_nll(result: dict, objective: str) -> float:
    """The lowest of an objective's NLL estimates in ``result`` (keys ``nll_<method>``).

    The sampling estimates are upper bounds on the model's NLL in expectation (Jensen), so the
    lower one is the tighter: importance sampling while q is informative, Monte Carlo once q
    has fallen onto the prior and proposes worse than the prior itself.
    """
    return min(result[f"nll_{method}"] for method in ESTIMATORS[objective])


def _cell(runs: list[dict], key: str, digits: int = 2) -> str:
    values = [r["test"][key] for r in runs if key in r["test"]]
    if not values:
        return ""
    mean, stderr = mean_stderr(values)
    if math.isnan(stderr):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def markdown(report: dict) -> str:
    """The table of a report (mean ± standard error over seeds) and its footnote."""
    budget = report["budget_settings"]
    lines = [
        "| K | model | NLL, IS | NLL, MC | true NLL (H) | NLL / true | TV, mean per input | "
        "TV, pooled | GED | visible acc. % | KL (share of -ELBO) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in report["tasks"]:
        for objective in OBJECTIVES:
            runs = [r for r in report["runs"] if r["k"] == k and r["objective"] == objective]
            if not runs:
                continue
            test0 = runs[0]["test"]
            exact = "nll_exact" in test0
            kl = ""
            if "kl" in test0:
                kl = f"{_cell(runs, 'kl')} ({_cell(runs, 'kl_share')})"
            first = _cell(runs, "nll_exact" if exact else "nll_importance")
            cells = [
                str(k),
                objective,
                f"{first} (exact)" if exact else first,
                _cell(runs, "nll_monte_carlo"),
                f"{_cell(runs, 'true_nll')} ({test0['entropy']:.2f})",
                _cell(runs, "nll_ratio"),
                _cell(runs, "tv_mean"),
                _cell(runs, "tv_pooled"),
                _cell(runs, "ged", 3),
                _cell(runs, "visible_accuracy"),
                kl,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Test split of {budget['test']} pairs per task, mean ± standard error over seeds "
        f"{report['seeds']}; {budget['steps']} updates of batch {budget['batch']} on "
        f"{budget['train']} training pairs per model. NLL in nats per image (IS: importance "
        f"sampling, S={budget['is']}; MC: Monte Carlo from the prior, S={budget['mc']}); NLL / "
        f"true uses the lower (tighter) of the estimates, exact for cnn and gdnn. TV and GED from "
        f"{budget['mode_samples']} samples on each of the first {budget['mode_inputs']} test "
        f"inputs (GED from the first {budget['ged_samples']}; a sample farther than "
        f"{MISS_FRACTION:.0%} of the occluded pixels from every candidate is a miss). "
        f"GED: {ged_convention(report)}, d = 1 - IoU of the foreground, the truth's terms "
        f"exact over the weighted candidates. Command: `{report['command']}`; "
        f"{report['hardware']}, torch {report['torch']}, "
        f"{report['date']}, {report['seconds'] / 60:.1f} minutes in all"
        + (" (summed over the merged jobs)." if "merged_from" in report else "."),
    ]
    return "\n".join(lines) + "\n"


def ged_convention(report: dict) -> str:
    """The GED convention a report was written with (reports before 1.0 carry none)."""
    return report.get("ged_convention", LEGACY_GED_CONVENTION)


def write_report(report: dict, out: Path) -> None:
    """OUT.json and its markdown table OUT.md, each written atomically."""
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(out.with_suffix(".md"), markdown(report))


def merge_reports(paths: list[Path]) -> dict:
    """One report from several runs of this script (seeds run as parallel jobs).

    The reports must share the budget's settings, the miss threshold and the GED convention;
    a (K, objective, seed) may appear only once. The NLL ratio is recomputed with
    `tightest_nll`, so reports written before it took the tighter estimate read the same as
    new ones.
    """
    reports = [json.loads(Path(path).read_text()) for path in paths]
    first = reports[0]
    for path, report in zip(paths, reports, strict=True):
        for key in ("budget_settings", "miss_fraction"):
            if report[key] != first[key]:
                raise ValueError(f"{path}: {key} {report[key]} differs from {paths[0]}'s")
        if ged_convention(report) != ged_convention(first):
            raise ValueError(
                f"{path}: its GED ({ged_convention(report)}) is not {paths[0]}'s "
                f"({ged_convention(first)}); rerun one of them to merge"
            )
    runs, seen = [], set()
    for path, report in zip(paths, reports, strict=True):
        for run in report["runs"]:
            key = (run["k"], run["objective"], run["seed"])
            if key in seen:
                raise ValueError(f"{path}: K={key[0]} {key[1]} seed {key[2]} is already merged")
            seen.add(key)
            test = run["test"]
            test["nll_ratio"] = tightest_nll(test, run["objective"]) / test["true_nll"]
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
        "runs": runs,
    }
