#!/usr/bin/env bash
# The two long CPU studies behind docs/benchmarks/lfw128.md (issue 19) and the known-truth
# side-by-side run of docs/benchmarks/known_truth.md (issue 20), one job each, resumable:
# the same command again takes every finished run as it is (from RUNS, or from KEEP when
# RUNS is gone) and trains only the rest.
#
#   DATA=path/to/lfw RUNS=path/outside/the/repo KEEP=results benchmarks/long_studies.sh
#
# DATA: the LFW Part Labels folder (or its archives); RUNS: work folders, checkpoints and
# logs (outside the repo); KEEP: where finished runs' small files go (default: this
# checkout's results/, where our runs are committed). Run it from a checkout that stays at
# one commit while it runs (a git worktree): the code it runs is this checkout's. The LFW
# table's training children are pinned by lfw_study.py itself (--commit, default the
# pinned one in RUNS/lfw128_table/study.json, else HEAD).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${DATA:?set DATA to the LFW Part Labels folder}" "${RUNS:?set RUNS to a folder outside the repo}"
KEEP=${KEEP:-$ROOT/results}
mkdir -p "$RUNS"
export PYTHONPATH=$ROOT NO_ALBUMENTATIONS_UPDATE=1 OMP_NUM_THREADS=1
cd "$ROOT"

step() {  # one call; a failure is logged and the next call goes on (a failed run stays listed)
  "$@" || echo "long_studies.sh: exit code $? from: $*" >&2
}

lfw_table() {
  local common=(--data-root "$DATA" --runs "$RUNS/lfw128_table" --cache-dir "$RUNS/lfw_cache"
                --recipe r18_b16_cosine --jobs 1 --keep "$KEEP/lfw128_table_runs")
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 0
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 1 2 \
      --rows "CNN (msc, NI)" best-stochastic
  local score=(python benchmarks/lfw_study.py --stage score --data-root "$DATA"
               --runs "$RUNS/lfw128_table" --cache-dir "$RUNS/lfw_cache"
               --keep "$KEEP/lfw128_table_runs" --summary "$RUNS/lfw_128_summary.json")
  # a run still training when its machine goes is trained again from its start, so the
  # short runs go first. The ensemble of issue 20 trained apart: its four members are
  # CNN (NI) runs (about half a CPU-hour each, 0.75 beside another job), joined by the score stage while their
  # checkpoints are at hand (`ensemble (NI, apart)`; the ensemble head's own row trains its
  # five side by side, over three hours of one thread: more than a machine lasts here)
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 1 2 3 4 \
      --rows "CNN (NI)"
  step "${score[@]}"
  # The picture of every model on the same test images draws each row
  # from a run's kept figure rows, which only runs finished since 2026-12-04 have: another
  # seed of each row it shows (about half a CPU-hour each, the SSN's about two; the table
  # gains their spread), the CNN's fourth
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 1 \
      --rows "CVAE (msc, NI)" "GSNN (msc, NI)" "GDNN (msc, NI)" "hybrid (msc, NI)" \
      "MC dropout (NI)" "ProbUNet (NI)" "SSN (NI)"
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 3 --rows "CNN (msc, NI)"
  # then issue 20's rows: the peers (about a run's time each), our known-truth CVAE recipe
  # (over 7 CPU-seconds an update, over three hours of one thread: it finishes only on a
  # machine that lasts, or on a GPU)
  step python benchmarks/lfw_study.py --stage table "${common[@]}" --seeds 0 \
      --rows "ProbUNet (NI)" "SSN (NI)" "MC dropout (NI)" "CVAE recipe (msc, NI)"
  step "${score[@]}"
  step python benchmarks/lfw_study.py --stage figure --data-root "$DATA" \
      --runs "$RUNS/lfw128_table" --cache-dir "$RUNS/lfw_cache" \
      --figure "$RUNS/lfw128_models_samples.png"
}

known_truth() {  # passes again while a run that another job held is unfinished
  # returns 0 whatever the passes found: a run still held by the other job is finished (and
  # the complete report written) by that job, and under `set -e` a failing status here
  # would end this job's branch before its core joins the other study
  local pass
  for pass in 1 2 3; do
    step python benchmarks/known_truth.py --budget cpu --threads 1 --steps 8000 --split test \
        --holdout 0.2 --annotators 4 --objectives cnn gsnn cvae hybrid \
        --heads cvae probunet ssn mc_dropout ensemble \
        --recipes ciwae=configs/known_truth_ciwae.yaml --seeds 0 1 2 \
        --work-dir "$RUNS/kt_runs" --out "$RUNS/kt_runs/report" \
        --keep "$KEEP/known_truth_side_by_side_runs" --figure "$RUNS/kt_runs/samples.png"
    python - "$RUNS/kt_runs/report.json" <<'PY' && break
import json, sys
sys.exit(1 if json.load(open(sys.argv[1]))["unfinished"] else 0)
PY
  done
  return 0
}

# one process per core: when one study is done, its core joins the other's runs (each run
# is claimed by one process at a time, a busy one skipped, so two jobs share a list without
# clashing; the last LFW job to finish writes the complete summary)
{ lfw_table >> "$RUNS/lfw_table.log" 2>&1; known_truth >> "$RUNS/known_truth_2.log" 2>&1; } &
{ known_truth >> "$RUNS/known_truth.log" 2>&1; lfw_table >> "$RUNS/lfw_table_2.log" 2>&1; } &
wait
