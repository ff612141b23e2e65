"""Images with several annotations each (LIDC-IDRI style), from one mask folder per annotator.

The layout (``data.dataset: multi_annotator``, root ``data.root``)::

    <root>/
      images/<name>.png            the image (.png, .jpg or .jpeg; grey or colour)
      annotations/<annotator>/<name>.png
                                   one folder per annotator, one mask per image: single
                                   channel, pixel value = class index
      train.txt  val.txt  test.txt the split lists: one <name> per line (no extension)
      classes.txt                  optional: one class name per line, line i = value i;
                                   default "background", "foreground"

A ``<name>`` may hold folders (``LIDC-IDRI-0001/slice_042``). Every annotator folder must
hold a mask for every image named in a split list: an annotator who saw nothing there has an
all-zero mask (as the LIDC-IDRI releases store them). The annotators are the sub-folders of
``annotations/``, in sorted order; the first is the one that ``labels`` (and the evaluation's
single-annotation metrics) use. Images and masks are resized to ``size`` x ``size`` (bicubic,
nearest).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from cvae_seg.data.common import SegmentationArrays, check_8bit_image, decode_image, resize_pair

__all__ = ["IMAGE_SUFFIXES", "load_multi_annotator"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LAYOUT = "expected images/, annotations/<annotator>/ and train.txt, val.txt, test.txt"
_SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


def _read_names(path: Path) -> list[str]:
    """The names of a split list. "utf-8-sig" drops the byte-order mark that Windows editors
    write first, which would otherwise stick to the first name; a name listed twice is
    refused, since it would count its image twice in training and in every score."""
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} is missing; {_LAYOUT} (docs/data.md)")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise ValueError(f"split list {path} names no images; expected one <name> per line")
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise ValueError(
            f"split list {path} names {twice[:5]} more than once; expected each <name> once"
        )
    return names


def _read_classes(root: Path) -> tuple[str, ...]:
    path = root / "classes.txt"
    if not path.is_file():
        return ("background", "foreground")
    classes = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(classes) < 2:
        raise ValueError(f"{path} names {len(classes)} class; expected one name per line, >= 2")
    return classes


def _annotators(root: Path) -> list[str]:
    folder = root / "annotations"
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder {folder} is missing; {_LAYOUT}")
    # hidden folders (.ipynb_checkpoints, .git, ...) are no annotators
    annotators = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] != ".")
    if not annotators:
        raise ValueError(f"{folder} has no annotator folders; expected annotations/<annotator>/")
    return annotators


def _image_path(root: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = root / "images" / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"image {root / 'images' / name}.png (or .jpg, .jpeg) is missing; it is named in a "
        "split list"
    )


def _read_mask(
    path: Path, image_size: tuple[int, int], num_classes: int, ignore_index: int | None
) -> Image.Image:
    """The mask at ``path``, checked: one channel, the image's size, known class values."""
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation {path} is missing; every annotator folder needs a mask for every "
            "image (an all-zero mask where the annotator marked nothing)"
        )
    mask = decode_image(path)
    if mask.mode not in ("L", "P", "I", "I;16", "1"):
        raise ValueError(
            f"annotation {path} has mode {mask.mode}; expected a single-channel mask whose "
            "pixel values are class indices"
        )
    if mask.size != image_size:
        raise ValueError(
            f"annotation {path} is {mask.size[0]}x{mask.size[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}"
        )
    pixels = np.asarray(mask)  # a palette ("P") mask gives its indices: the class values
    values = np.unique(pixels)
    if values[0] < 0 or values[-1] > 255:  # the label maps are uint8: 300 would become 44
        wide = [int(v) for v in values if not 0 <= v <= 255]
        raise ValueError(
            f"annotation {path} has values {wide[:5]} outside 0..255; expected class indices, "
            "which the 8-bit label maps hold (a value above 255 would wrap around)"
        )
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        allowed = f"0..{num_classes - 1}" + ("" if ignore_index is None else f" or {ignore_index}")
        raise ValueError(
            f"annotation {path} has values {bad}; expected class indices {allowed} "
            "(classes.txt lists the classes; data.ignore_index the ignored value)"
        )
    return Image.fromarray(pixels.astype(np.uint8))


def load_multi_annotator(
    root: str | Path, split: str, size: int = 128, ignore_index: int | None = None
) -> SegmentationArrays:
    """Decode a split of the multi-annotator layout: arrays with annotations (N, A, H, W).

    Errors name the file and what was expected: a missing split list, image or mask, a name
    listed twice, a 16-bit image, a mask of another size than its image, a colour mask, a
    value that is no class index or above 255, an ``ignore_index`` outside 0..255.
    """
    root = Path(root)
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {tuple(_SPLIT_FILES)}, got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"multi-annotator root {root} does not exist; {_LAYOUT}")
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise ValueError(
            f"data.ignore_index={ignore_index} cannot mark pixels in the masks of {root}: "
            "expected a value in 0..255 for multi-annotator masks (8-bit label maps), e.g. "
            "255, or None"
        )
    classes = _read_classes(root)
    annotators = _annotators(root)
    names = _read_names(root / _SPLIT_FILES[split])
    images, annotations = [], []
    for name in names:
        path = _image_path(root, name)
        image = check_8bit_image(decode_image(path), path)
        masks = [
            _read_mask(
                root / "annotations" / a / f"{name}.png", image.size, len(classes), ignore_index
            )
            for a in annotators
        ]
        image_array, _ = resize_pair(image, masks[0], size)
        nearest = Image.Resampling.NEAREST
        images.append(image_array)
        annotations.append(np.stack([np.asarray(m.resize((size, size), nearest)) for m in masks]))
    stacked = np.stack(annotations).astype(np.uint8)
    return SegmentationArrays(
        np.stack(images), stacked[:, 0].copy(), classes, tuple(names), stacked
    )
