#!/usr/bin/env bash
# Once, on a machine with the package registries: the wheels the lent GPU machine lacks, into
# .whl/ (git-ignored), for benchmarks/device_check.sh. That machine's image (Python 3.12)
# holds torch, torchvision, timm, numpy, scipy, pillow, pyyaml, safetensors, tqdm,
# torchmetrics, opencv and huggingface-hub; not smp, albumentations (and albucore's needs),
# pydantic or pycocotools. timm and typing-extensions come too: the tests' timm encoder and
# pydantic need versions newer than the image may hold. The versions: constraints.txt's, else those installed here (the
# ones the tests pass with).
set -euo pipefail
cd "$(dirname "$0")/.."
pin() {
  grep -i "^$1==" constraints.txt | head -1 && return
  python3 -c "import importlib.metadata as m, sys; print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')" "$1"
}
wanted=(segmentation-models-pytorch timm albumentations albucore simsimd stringzilla pydantic
        pydantic-core annotated-types typing-inspection typing-extensions pycocotools)
mkdir -p .whl
for name in "${wanted[@]}"; do
  spec=$(pin "$name")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls .whl
