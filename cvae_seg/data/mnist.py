"""MNIST for the paper's quadrant-completion task (Sohn, Lee, Yan 2015).

Reads the four official IDX files, raw or gzip. Standard split: the first 50,000 training
images for training, the last 10,000 for validation, the 10,000 test images for test.
A 28x28 digit is cut into four 14x14 quadrants; 1, 2 or 3 of them are observed:

- 1: bottom-left;  2: the left half;  3: all but the bottom-right.

Items are {"image": (1, 28, 28) with the hidden quadrants set to 0, "mask": (28, 28) the
whole digit as the target, grey levels in [0, 1] or binarised at 0.5}; the model scores only
the hidden pixels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from cvae_seg.data.common import ARCHIVE_ERRORS
from cvae_seg.quadrants import quadrant_mask

__all__ = ["MNISTQuadrants", "load_mnist", "quadrant_mask", "read_idx"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_LAYOUT = (
    "expected the four official MNIST IDX files (train-images-idx3-ubyte[.gz], ...); see "
    "tools/download_data.py mnist"
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (uint8 images or labels) from a raw or gzip file.

    Our own reader rather than torchvision's (``read_sn3_pascalvincent_tensor``, not part of
    its public API): a cut or foreign file must fail naming itself, which that one does not.
    """
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except ARCHIVE_ERRORS as error:  # gzip names no file: a cut download, say which
            raise ValueError(
                f"{path} is not a complete gzip file ({type(error).__name__}: {error}); is it "
                "truncated? delete it and fetch it again (cvae-seg download mnist)"
            ) from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; {_LAYOUT}")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, found {body.size} bytes; is it truncated?")
    return body.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MNIST root {root} has no {stem} or {stem}.gz; {_LAYOUT}")


def load_mnist(
    root: str | Path, split: str, val_size: int = 10000
) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, digit labels (N,)) of "train", "val" or "test".

    Validation is the last ``val_size`` training images (standard: 50k / 10k / 10k).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"MNIST split must be 'train', 'val' or 'test', got {split!r}")
    root = Path(root)
    source = "test" if split == "test" else "train"
    images = read_idx(_find(root, _FILES[source][0]))
    labels = read_idx(_find(root, _FILES[source][1]))
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST {source} files disagree: {len(images)} images, {len(labels)} labels"
        )
    if source == "test":
        return images, labels
    if not 0 < val_size < len(images):
        raise ValueError(
            f"val_size must be in (0, {len(images)}) for {len(images)} training images, "
            f"got {val_size}"
        )
    cut = len(images) - val_size
    return (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])


class MNISTQuadrants(torch.utils.data.Dataset):
    """Quadrant-completion items; ``dataset[(i, seed)]`` is accepted like the other data sets."""

    classes = ("pixel",)
    num_classes = 1

    def __init__(self, images: np.ndarray, observed: int, binarize: bool = False) -> None:
        self.images = images
        self.observed = quadrant_mask(observed, images.shape[-1])
        self.binarize = binarize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index = key[0] if isinstance(key, tuple) else key
        digit = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)
        if self.binarize:
            digit = (digit >= 0.5).float()
        image = digit * torch.from_numpy(self.observed)
        return {"image": image.unsqueeze(0), "mask": digit, "index": index}
