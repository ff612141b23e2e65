#!/usr/bin/env bash
# One LFW table run trained and scored on the lent GPU machine (benchmarks/device_lfw_run.py),
# with the GPU tests beside it, from this repo's root on that machine:
#
#   bash benchmarks/device_lfw_run.sh "CVAE recipe (msc, NI)" 0 TRAINED_AT SCORED_AT
#
# What it needs there, carried in one call or left by an earlier call on the same (warm)
# machine, since the wheels, the pinned source and the data together exceed one call's 64 MiB:
#   .whl/          the wheels that machine lacks (benchmarks/device_wheels.sh, once, here);
#                  installed into /tmp/site
#   .carry/src/    the study's pinned commit: git archive TRAINED_AT cvae_seg configs
#                  benchmarks pyproject.toml | tar -x -C .carry/src; copied to /tmp/src
#   .carry/lfw/    the LFW Part Labels archives and split lists (the data root, copied)
# With `setup` as the only argument it does the first two and checks the imports.
# $OUT gets the logs, the GPU tests' report and kept.tar (the run's kept files, to unpack
# into the study's --keep folder); the exit code is the run's.
set -uo pipefail
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
fi
if [ -d .carry/src/cvae_seg ]; then
  mkdir -p /tmp/src && cp -r .carry/src/. /tmp/src/
  # the run trains in a child process whose PYTHONPATH is the pinned source alone
  cp -rn /tmp/site/. /tmp/src/
fi
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, segmentation_models_pytorch as smp, albumentations, cvae_seg
print('torch', torch.__version__, 'smp', smp.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$OUT/setup.log" || exit 1
(cd /tmp && PYTHONPATH=/tmp/src python3 -c "import cvae_seg, segmentation_models_pytorch") || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
[ "${1:-}" = setup ] && exit 0

row=$1 seed=$2 trained_at=$3 scored_at=$4
timeout 300 python3 -m pytest -o addopts="" -p no:cacheprovider -m gpu -rs tests/test_gpu.py \
    > "$OUT/gpu_tests.log" 2>&1 &
tests=$!
timeout "${RUN_LIMIT:-480}" python3 benchmarks/device_lfw_run.py --row "$row" --seed "$seed" \
    --source /tmp/src --trained-at "$trained_at" --scored-at "$scored_at" \
    --data-root "$PWD/.carry/lfw" --runs /tmp/lfw_runs --out "$OUT/kept.tar" 2>&1 | tee "$OUT/run.log"
status=${PIPESTATUS[0]}
find /tmp/lfw_runs -name train.log -exec cp {} "$OUT/train.log" \;
find /tmp/lfw_runs -name train.csv -exec cp {} "$OUT/train.csv" \;
wait "$tests"
echo "GPU tests exit $?" >> "$OUT/gpu_tests.log"
exit "$status"
