"""Download the paper's data sets: `cvae-seg download` (see `--help`).

python tools/download_data.py {lfw,cub,mnist} [--root data]
"""

import sys

from cvae_seg.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["download", *sys.argv[1:]]))
