"""Draw a sample grid from a checkpoint: `cvae-seg visualize` (see `--help`).

python tools/visualize.py CONFIG CHECKPOINT [--num-images 6] [--occlude 0.3] [--out FILE]
"""

import sys

from cvae_seg.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["visualize", *sys.argv[1:]]))
