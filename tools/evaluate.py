"""Evaluate a checkpoint: `cvae-seg evaluate` (see `python tools/evaluate.py --help`).

python tools/evaluate.py CONFIG CHECKPOINT [--split val|test] [--out FILE] [key.sub=value ...]
"""

import sys

from cvae_seg.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
