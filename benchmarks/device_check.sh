#!/usr/bin/env bash
# The checks that need a GPU, in one call of the device tool, from this repo's root:
#
#   run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540)
#
# .whl/ holds the wheels the lent machine lacks (benchmarks/device_wheels.sh, once, here).
# It runs the GPU tests (tests/test_gpu.py: AMP, channels-last, checkpoints and models moved
# to and from the GPU, the CUDA random stream), then the speed benchmark on the GPU (the
# plain smp model against each objective, as ratios in one run). Logs and results go to
# $OUT (the device tool brings them back); the exit code is the tests'.
set -uo pipefail
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" >> "$OUT/gpu.txt"
timeout 300 python3 -m pytest -o addopts="" -p no:cacheprovider -m gpu -rs tests/test_gpu.py \
    2>&1 | tee "$OUT/gpu_tests.log"
tests=${PIPESTATUS[0]}
timeout 180 python3 benchmarks/speed.py --device cuda --repeats 20 --out "$OUT/speed_gpu.json" \
    2>&1 | tee "$OUT/speed_gpu.log"
exit "$tests"
