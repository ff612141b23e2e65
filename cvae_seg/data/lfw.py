"""LFW Part Labels (Kae, Sohn, Lee, Learned-Miller, CVPR 2013): hair / skin / background.

Official layout (http://vis-www.cs.umass.edu/lfw/part_labels/), extracted into one folder:

    ROOT/lfw_funneled/<Name>/<Name>_NNNN.jpg
    ROOT/parts_lfw_funneled_gt_images/<Name>_NNNN.ppm   red hair, green skin, blue background
    ROOT/parts_train.txt  parts_validation.txt  parts_test.txt   "<Name> <number>" per line

The two archives (lfw-funneled.tgz, the official full one too, and
parts_lfw_funneled_gt_images.tgz) are read in place when the folders are absent.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cvae_seg.data.common import ARCHIVE_ERRORS, SegmentationArrays, decode_image, resize_pair

__all__ = ["LFW_CLASSES", "LFW_SPLITS", "load_lfw_parts", "read_lfw_list"]

LFW_CLASSES = ("background", "skin", "hair")
LFW_SPLITS = {"train": "parts_train.txt", "val": "parts_validation.txt", "test": "parts_test.txt"}
_COLOURS = {(0, 0, 255): 0, (0, 255, 0): 1, (255, 0, 0): 2}
_IMAGES, _LABELS = "lfw_funneled", "parts_lfw_funneled_gt_images"
_ARCHIVES = {_IMAGES: "lfw-funneled.tgz", _LABELS: "parts_lfw_funneled_gt_images.tgz"}
_LAYOUT = (
    "expected the LFW Part Labels layout: lfw_funneled/ (or lfw-funneled.tgz), "
    "parts_lfw_funneled_gt_images/ (or its .tgz) and parts_{train,validation,test}.txt; "
    "see tools/download_data.py"
)


def read_lfw_list(path: Path) -> list[str]:
    """Image stems ``<Name>_NNNN`` of a split list; numbers may or may not be zero-padded."""
    if not path.is_file():
        raise FileNotFoundError(f"LFW split list {path} is missing; {_LAYOUT}")
    stems = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{line_number}: expected '<Name> <number>', got {line!r}")
        stems.append(f"{parts[0]}_{int(parts[1]):04d}")
    if not stems:
        raise ValueError(f"LFW split list {path} names no images; {_LAYOUT}")
    return stems


def _label_to_classes(label: np.ndarray, source: str) -> np.ndarray:
    codes = (
        label[..., 0].astype(np.int32) << 16 | label[..., 1].astype(np.int32) << 8 | label[..., 2]
    )
    classes = np.full(codes.shape, 255, dtype=np.uint8)
    for (r, g, b), index in _COLOURS.items():
        classes[codes == (r << 16 | g << 8 | b)] = index
    unknown = classes == 255
    if unknown.any():
        colour = tuple(int(c) for c in label[unknown][0])
        raise ValueError(
            f"{source}: unknown label colour {colour}; expected red (255,0,0) hair, green "
            "(0,255,0) skin or blue (0,0,255) background"
        )
    return classes


class _Files:
    """Reads members of one part of the layout, from its folder or else its archive."""

    def __init__(self, root: Path, part: str) -> None:
        self.folder = root / part
        self.archive = root / _ARCHIVES[part]
        self.members: dict[str, bytes] | None = None
        if not self.folder.is_dir() and not self.archive.is_file():
            raise FileNotFoundError(
                f"LFW root {root} has neither {part}/ nor {self.archive.name}; {_LAYOUT}"
            )

    def read(self, relative: str, wanted: set[str]) -> tuple[bytes, str]:
        if self.folder.is_dir():
            path = self.folder / relative
            if not path.is_file():
                raise FileNotFoundError(f"LFW file {path} is missing; {_LAYOUT}")
            return path.read_bytes(), str(path)
        if self.members is None:  # one pass over the archive, keeping only what the split needs
            self.members = self._read_archive(wanted)
        source = f"{self.archive}:{relative}"
        if relative not in self.members:
            raise FileNotFoundError(f"LFW file {source} is missing; {_LAYOUT}")
        return self.members[relative], source

    def _read_archive(self, wanted: set[str]) -> dict[str, bytes]:
        """The ``wanted`` members' bytes; a corrupt or cut archive is named, with the fix."""
        members = {}
        try:
            with tarfile.open(self.archive) as tar:
                for member in tar:
                    name = member.name.split("/", 1)[-1]
                    if member.isfile() and name in wanted:
                        members[name] = tar.extractfile(member).read()
        except ARCHIVE_ERRORS as error:
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            raise ValueError(
                f"LFW archive {self.archive} cannot be read ({reason}); it is truncated or "
                f"corrupt: delete it and run `cvae-seg download lfw` again, or extract it "
                f"into {self.folder.name}/ yourself"
            ) from None
        return members


def load_lfw_parts(root: str | Path, split: str = "train", size: int = 128) -> SegmentationArrays:
    """Decode one split, images bicubic and labels nearest to size x size."""
    if split not in LFW_SPLITS:
        raise ValueError(f"LFW split must be one of {sorted(LFW_SPLITS)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LFW root {root} does not exist; {_LAYOUT}")
    stems = read_lfw_list(root / LFW_SPLITS[split])
    image_names = {f"{stem[:-5]}/{stem}.jpg" for stem in stems}
    label_names = {f"{stem}.ppm" for stem in stems}
    images_source, labels_source = _Files(root, _IMAGES), _Files(root, _LABELS)
    images, labels = [], []
    for stem in stems:
        image_bytes, image_path = images_source.read(f"{stem[:-5]}/{stem}.jpg", image_names)
        label_bytes, label_path = labels_source.read(f"{stem}.ppm", label_names)
        image = decode_image(image_bytes, image_path)
        label = decode_image(label_bytes, label_path).convert("RGB")
        if image.size != label.size:
            raise ValueError(
                f"{label_path}: label is {label.size[0]}x{label.size[1]} but its image "
                f"{image_path} is {image.size[0]}x{image.size[1]}"
            )
        # colours are checked at full size: after the nearest resize a stray pixel may be
        # one the resize skips, and the label would pass with it unseen
        classes = Image.fromarray(_label_to_classes(np.asarray(label), label_path))
        image_array, class_array = resize_pair(image, classes, size)
        images.append(image_array)
        labels.append(class_array)
    return SegmentationArrays(np.stack(images), np.stack(labels), LFW_CLASSES, tuple(stems))
