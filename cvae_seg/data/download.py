"""Download and extract the paper's data sets from their official sites (never run by tests).

Files land in ROOT/<dataset>/ (point ``data.root`` or $CVAE_SEG_DATA at ROOT). MNIST files are
checked against their published MD5 sums; for the others no checksum of the official archives
is pinned here, so `download` logs their SHA-256 for the user's records. Each download goes to
a temporary name first and is renamed when complete, so an interrupted one never passes for a
finished file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import urllib.request
from pathlib import Path

from cvae_seg.io import atomic_write

__all__ = ["SOURCES", "download"]

log = logging.getLogger(__name__)

_LFW = "http://vis-www.cs.umass.edu/lfw/"
_MNIST = "http://yann.lecun.com/exdb/mnist/"
SOURCES: dict[str, list[tuple[str, str | None]]] = {
    # (url, md5 or None); LFW Part Labels: http://vis-www.cs.umass.edu/lfw/part_labels/
    "lfw": [
        (_LFW + "lfw-funneled.tgz", None),
        (_LFW + "part_labels/parts_lfw_funneled_gt_images.tgz", None),
        (_LFW + "part_labels/parts_train.txt", None),
        (_LFW + "part_labels/parts_validation.txt", None),
        (_LFW + "part_labels/parts_test.txt", None),
    ],
    # https://www.vision.caltech.edu/datasets/cub_200_2011/
    "cub": [
        ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", None),
        ("https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz", None),
    ],
    "mnist": [
        (_MNIST + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        (_MNIST + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        (_MNIST + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        (_MNIST + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
}


def _fetch(url: str, target: Path, progress: bool) -> None:
    from tqdm import tqdm

    def write(handle) -> None:
        with urllib.request.urlopen(url) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    bar.update(len(chunk))

    atomic_write(target, write)


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def download(dataset: str, root: str | os.PathLike = "data", progress: bool = True) -> Path:
    """Fetch, check and extract ``dataset`` ("lfw", "cub" or "mnist") into ROOT/<dataset>/.

    Files already there are not fetched again (a rerun resumes after the last complete file).
    Returns the folder to use as the data set's root.
    """
    if dataset not in SOURCES:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {sorted(SOURCES)}")
    folder = Path(root).expanduser() / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for url, md5 in SOURCES[dataset]:
        target = folder / url.rsplit("/", 1)[1]
        if not target.exists():
            _fetch(url, target, progress)
        if md5 is not None and _digest(target, "md5") != md5:
            raise ValueError(f"{target}: MD5 differs from the published {md5}; delete it and retry")
        log.info("%s  sha256 %s", target, _digest(target, "sha256"))
        if target.suffix == ".tgz":
            with tarfile.open(target) as tar:
                tar.extractall(folder, filter="data")
    return folder
