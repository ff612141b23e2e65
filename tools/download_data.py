"""Download and extract the paper's data sets from their official sites (never run by tests).

    python tools/download_data.py {lfw,cub,mnist} [--root data]

Files land in ROOT/<dataset>/ (point data.root or $CVAE_SEG_DATA at ROOT). MNIST files are
checked against their published MD5 sums; for the others no checksum of the official
archives is pinned here, so the script prints their SHA-256 for your records. Downloads go to
a temporary name first and are renamed when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

LFW = "http://vis-www.cs.umass.edu/lfw/"
SOURCES: dict[str, list[tuple[str, str | None]]] = {
    # (url, md5 or None); LFW Part Labels: http://vis-www.cs.umass.edu/lfw/part_labels/
    "lfw": [
        (LFW + "lfw-funneled.tgz", None),
        (LFW + "part_labels/parts_lfw_funneled_gt_images.tgz", None),
        (LFW + "part_labels/parts_train.txt", None),
        (LFW + "part_labels/parts_validation.txt", None),
        (LFW + "part_labels/parts_test.txt", None),
    ],
    # https://www.vision.caltech.edu/datasets/cub_200_2011/
    "cub": [
        ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", None),
        ("https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz", None),
    ],
    "mnist": [
        (
            "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        (
            "http://yann.lecun.com/exdb/mnist/train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        (
            "http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        (
            "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ],
}


def _download(url: str, target: Path) -> None:
    tmp = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url) as response, open(tmp, "wb") as handle:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                bar.update(len(chunk))
    os.replace(tmp, target)


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(SOURCES))
    parser.add_argument("--root", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    folder = args.root / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    for url, md5 in SOURCES[args.dataset]:
        target = folder / url.rsplit("/", 1)[1]
        if not target.exists():
            _download(url, target)
        if md5 is not None and _digest(target, "md5") != md5:
            raise SystemExit(f"{target}: MD5 differs from the published {md5}; delete it and retry")
        print(f"{target}  sha256 {_digest(target, 'sha256')}")
        if target.suffix == ".tgz":
            with tarfile.open(target) as tar:
                tar.extractall(folder, filter="data")
    if args.dataset == "cub" and (folder / "CUB_200_2011").is_dir():
        print(f"CUB root: {folder} (CUB_200_2011/ and segmentations/ in it)")
    print(f"done: {folder}")


if __name__ == "__main__":
    main()
