"""Train a model from a YAML config: `cvae-seg train` (see `python tools/train.py --help`).

python tools/train.py configs/demo.yaml [--work-dir DIR] [--resume [CKPT]] [key.sub=value ...]
torchrun --nproc_per_node=N tools/train.py configs/demo.yaml ...   # DDP, same arguments
"""

import sys

from cvae_seg.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
