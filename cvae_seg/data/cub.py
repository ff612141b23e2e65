"""Caltech-UCSD Birds 200-2011, foreground segmentation of bird crops.

Official layout (https://www.vision.caltech.edu/datasets/cub_200_2011/, the segmentations are a
separate archive that extracts to ``segmentations/``):

    ROOT/images.txt              "<id> <class_dir>/<file>.jpg"
    ROOT/bounding_boxes.txt      "<id> <x> <y> <width> <height>"   (pixels, floats)
    ROOT/train_test_split.txt    "<id> <1 train | 0 test>"
    ROOT/images/<class_dir>/<file>.jpg
    ROOT/segmentations/<class_dir>/<file>.png   (or ROOT/../segmentations/, as extracted)

ROOT may also be the folder that holds CUB_200_2011/ and segmentations/.

Each image is cropped to its bounding box (plus ``margin`` of its size on every side, clipped
to the image), resized to size x size, and its soft mask thresholded into background / bird.
The validation split is a seeded hold-out of ``val_fraction`` of the official training list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cvae_seg.data.common import SegmentationArrays, decode_image

__all__ = ["CUB_CLASSES", "load_cub"]

CUB_CLASSES = ("background", "bird")
_LAYOUT = (
    "expected the CUB_200_2011 layout: images.txt, bounding_boxes.txt, train_test_split.txt, "
    "images/ and segmentations/ (in the root or beside it); see tools/download_data.py"
)


def _read_table(path: Path, columns: int) -> dict[int, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"CUB file {path} is missing; {_LAYOUT}")
    rows = {}
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != columns + 1 or not parts[0].isdigit():
            raise ValueError(
                f"{path}:{line_number}: expected {columns + 1} fields, an image id (a whole "
                f"number) first, got {line!r}; {_LAYOUT}"
            )
        rows[int(parts[0])] = parts[1:]
    return rows


def _check_tables(root: Path, tables: dict[str, dict[int, list[str]]]) -> None:
    """Refuse tables that disagree on the image ids (each id's row is looked up in all of
    them), a split flag other than 0 / 1 or a box that is no number, naming file and id."""
    split_file = "train_test_split.txt"
    ids = set(tables[split_file])
    for name, rows in tables.items():
        missing, extra = sorted(ids - set(rows)), sorted(set(rows) - ids)
        if missing or extra:
            which = (
                f"has no line for image id(s) {missing[:5]}, which {split_file} lists"
                if missing
                else f"lists image id(s) {extra[:5]}, which {split_file} does not"
            )
            raise ValueError(
                f"CUB file {root / name} {which}; the three tables must list the same ids "
                f"(from one CUB_200_2011 release); {_LAYOUT}"
            )
    for image_id, row in tables[split_file].items():
        if row[0] not in ("0", "1"):
            raise ValueError(
                f"CUB file {root / split_file}: image {image_id} has {row[0]!r}; expected 1 "
                "(train) or 0 (test)"
            )
    for image_id, box in tables["bounding_boxes.txt"].items():
        try:
            [float(v) for v in box]
        except ValueError:
            raise ValueError(
                f"CUB file {root / 'bounding_boxes.txt'}: image {image_id} has box {box}; "
                "expected four numbers: x y width height"
            ) from None


def _split_ids(
    split_table: dict[int, list[str]], split: str, val_fraction: float, seed: int
) -> list[int]:
    is_train = {i: row[0] == "1" for i, row in split_table.items()}
    if split == "test":
        return sorted(i for i, train in is_train.items() if not train)
    train_ids = np.array(sorted(i for i, train in is_train.items() if train))
    held_out = np.random.default_rng(seed).permutation(len(train_ids))[
        : round(val_fraction * len(train_ids))
    ]
    val = set(train_ids[held_out].tolist())
    return [int(i) for i in train_ids if (int(i) in val) == (split == "val")]


def _crop_box(box: list[str], width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    x, y, w, h = (float(v) for v in box)
    left, top = max(0.0, x - margin * w), max(0.0, y - margin * h)
    right, bottom = min(float(width), x + w + margin * w), min(float(height), y + h + margin * h)
    return (
        round(left),
        round(top),
        max(round(right), round(left) + 1),
        max(round(bottom), round(top) + 1),
    )


def load_cub(
    root: str | Path,
    split: str = "train",
    size: int = 128,
    margin: float = 0.0,
    threshold: float = 0.5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> SegmentationArrays:
    """Decode one split ("train", "val" or "test") of CUB-200-2011 into bird crops."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"CUB split must be 'train', 'val' or 'test', got {split!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CUB root {root} does not exist; {_LAYOUT}")
    if not (root / "images.txt").exists() and (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"  # the folder both official archives were extracted into
    paths = _read_table(root / "images.txt", 1)
    boxes = _read_table(root / "bounding_boxes.txt", 4)
    split_table = _read_table(root / "train_test_split.txt", 1)
    _check_tables(
        root,
        {"images.txt": paths, "bounding_boxes.txt": boxes, "train_test_split.txt": split_table},
    )
    segmentations = root / "segmentations"
    if not segmentations.is_dir():
        segmentations = root.parent / "segmentations"
    if not segmentations.is_dir():
        raise FileNotFoundError(
            f"CUB root {root} has no segmentations/ in it or beside it; {_LAYOUT}"
        )

    images, labels, names = [], [], []
    for image_id in _split_ids(split_table, split, val_fraction, seed):
        relative = paths[image_id][0]
        image_path = root / "images" / relative
        mask_path = (segmentations / relative).with_suffix(".png")
        for path in (image_path, mask_path):
            if not path.is_file():
                raise FileNotFoundError(f"CUB file {path} is missing; {_LAYOUT}")
        image = decode_image(image_path).convert("RGB")
        mask = decode_image(mask_path).convert("L")
        if image.size != mask.size:
            raise ValueError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image is "
                f"{image.size[0]}x{image.size[1]}"
            )
        box = _crop_box(boxes[image_id], image.size[0], image.size[1], margin)
        image = image.crop(box).resize((size, size), Image.Resampling.BICUBIC)
        # masks are soft (annotator agreement): resize as grey levels, then threshold
        mask = mask.crop(box).resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(image, dtype=np.uint8))
        labels.append((np.asarray(mask, dtype=np.float32) >= threshold * 255).astype(np.uint8))
        names.append(relative)
    if not images:
        raise ValueError(f"CUB split {split!r} of {root} is empty")
    return SegmentationArrays(np.stack(images), np.stack(labels), CUB_CLASSES, tuple(names))
