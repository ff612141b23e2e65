"""Download and extract the paper's data sets from their official sites (never run by tests).

Files land in ROOT/<dataset>/: point $CVAE_SEG_DATA at ROOT, or ``data.root`` at
ROOT/<dataset> itself (``data.root`` is the data set's own folder, see
`cvae_seg.data.common.resolve_root`). MNIST files are checked against their published MD5
sums; for the others no checksum of the official archives is pinned here, so `download` logs
their SHA-256 for the user's records. Each download goes to a temporary name first and is
renamed when complete, so an interrupted one never passes for a finished file; a file already
there is not fetched again, so an archive that is corrupt all the same (a server's error page,
a disk fault) fails extraction with an error that names it and says to delete it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import IO

from cvae_seg.data.common import ARCHIVE_ERRORS
from cvae_seg.io import atomic_write

__all__ = ["MIRRORS", "SOURCES", "download"]

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


# other servers of the same files (checked against the same MD5), tried first: LeCun's site
# often refuses downloads; torchvision's MNIST lists the same mirror
MIRRORS: dict[str, tuple[str, ...]] = {_MNIST: ("https://ossci-datasets.s3.amazonaws.com/mnist/",)}


def _fetch_any(url: str, target: Path, progress: bool) -> None:
    """Fetch ``url`` from its mirrors, then from itself; the error names every address tried.

    Our own few lines rather than torchvision's download_url: that one writes in place, so
    an interrupted download would pass for a finished file on the next run.
    """
    candidates = [mirror + url.removeprefix(base) for base, mirrors in MIRRORS.items()
                  if url.startswith(base) for mirror in mirrors]  # fmt: skip
    failures = []
    for candidate in [*candidates, url]:
        try:
            _fetch(candidate, target, progress)
            return
        except OSError as error:  # urllib's URLError and HTTPError are OSErrors
            log.warning("%s: %s", candidate, error)
            failures.append(f"{candidate} ({error})")
    raise OSError(f"{target.name} could not be downloaded from {'; '.join(failures)}")


def _fetch(url: str, target: Path, progress: bool) -> None:
    from tqdm import tqdm

    def write(handle: IO[bytes]) -> None:
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file where a folder should be, no permission
        raise OSError(
            f"download root {root}: cannot make {folder} ({error.strerror}); expected a "
            "folder, made when missing"
        ) from None
    for url, md5 in SOURCES[dataset]:
        target = folder / url.rsplit("/", 1)[1]
        if not target.exists():
            _fetch_any(url, target, progress)
        if md5 is not None and _digest(target, "md5") != md5:
            raise ValueError(f"{target}: MD5 differs from the published {md5}; delete it and retry")
        log.info("%s  sha256 %s", target, _digest(target, "sha256"))
        if target.suffix == ".tgz":
            _extract(target, folder, dataset)
    return folder


def _extract(archive: Path, folder: Path, dataset: str) -> None:
    """Extract ``archive`` into ``folder``; a corrupt one is named, with how to fetch it anew
    (it stays in place, and `download` fetches no file that is already there)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except ARCHIVE_ERRORS as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(
            f"{archive} cannot be extracted ({reason}); it is truncated or corrupt: delete it "
            f"and run `cvae-seg download {dataset} --root {folder.parent}` again"
        ) from None
