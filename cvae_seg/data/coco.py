"""COCO-format segmentation data (an annotation JSON and an image folder), via pycocotools.

Categories become classes 1..K in the order given (default: sorted category ids); class 0 is
background. Later (smaller) annotations are painted over larger ones; crowd regions are
marked ``ignore_index`` so that they count in no loss or metric.

Several annotators: when the annotations carry an annotator id (``"annotator"``, or
``"attributes": {"annotator": ...}`` as CVAT exports it), each image gets one label map per
annotator found anywhere in the file (ids in sorted order) and the arrays hold them as
``annotations`` (N, A, H, W); ``labels`` is the first annotator's. An annotator with no
annotation on an image has marked nothing there: an all-background map. Either every
annotation names its annotator or none does.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cvae_seg.data.common import SegmentationArrays, decode_image, resize_pair

__all__ = ["load_coco"]


def load_coco(
    annotation_file: str | Path,
    image_dir: str | Path,
    size: int = 128,
    category_ids: list[int] | None = None,
    ignore_index: int | None = 255,
) -> SegmentationArrays:
    """Decode every image of a COCO annotation file into (image, class map) arrays.

    Crowd regions (``iscrowd``) are painted ``ignore_index``, the value the loss and the
    metrics skip. A file with crowds therefore needs one: None is refused (a crowd painted
    as a class, or as a value the loss does not skip, would train on it), and so is a value
    that is a class or does not fit the uint8 label maps.
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    coco = _read_annotations(annotation_file, image_dir)
    known = sorted(coco.getCatIds())
    category_ids = list(category_ids) if category_ids is not None else known
    unknown = sorted(set(category_ids) - set(known))
    if unknown:
        raise ValueError(f"{annotation_file}: category ids {unknown} not found; it has {known}")
    class_of = {cat: index + 1 for index, cat in enumerate(category_ids)}
    names = [c["name"] for c in coco.loadCats(category_ids)]
    every = coco.dataset.get("annotations", [])
    painter = _Painter(coco, class_of, _annotators(every, annotation_file),
                       _crowd_value(every, class_of, ignore_index, annotation_file))  # fmt: skip
    images, labels, files = [], [], []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        image, maps = _decode_entry(info, image_dir, annotation_file, painter)
        images.append(resize_pair(image, Image.fromarray(maps[0]), size)[0])
        labels.append(np.stack([_resize_label(m, size) for m in maps]))
        files.append(info["file_name"])
    if not images:
        raise ValueError(f"{annotation_file} has no images")
    stacked = np.stack(labels)
    return SegmentationArrays(
        np.stack(images),
        stacked[:, 0].copy(),
        ("background", *names),
        tuple(files),
        stacked if painter.annotators else None,
    )


def _read_annotations(annotation_file: Path, image_dir: Path) -> Any:
    """The pycocotools index of the file, with errors that name it."""
    from pycocotools.coco import COCO

    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {annotation_file} is missing")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder {image_dir} is missing")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as error:  # JSON or its layout
        raise ValueError(
            f"COCO annotation file {annotation_file} cannot be read ({type(error).__name__}: "
            f"{error}); expected COCO JSON with images, annotations and categories"
        ) from None


@dataclass(frozen=True)
class _Painter:
    """What turns an image's annotations into its class map(s): one per annotator."""

    coco: Any
    class_of: dict[int, int]
    annotators: list[Any]
    ignore: int

    def maps(self, image_id: int, shape: tuple[int, int]) -> list[np.ndarray]:
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None))
        return [
            _paint(self.coco, [a for a in annotations if _annotator(a) == who], shape,
                   self.class_of, self.ignore)
            for who in self.annotators or [None]
        ]  # fmt: skip


def _decode_entry(
    info: dict[str, Any], image_dir: Path, annotation_file: Path, painter: _Painter
) -> tuple[Image.Image, list[np.ndarray]]:
    """One image of the file and its class map(s), checked against the file's record."""
    path = image_dir / info["file_name"]
    if not path.is_file():
        raise FileNotFoundError(f"COCO image {path} (id {info['id']}) is missing")
    maps = painter.maps(info["id"], (info["height"], info["width"]))
    image = decode_image(path)
    if image.size != (info["width"], info["height"]):
        raise ValueError(
            f"COCO image {path} is {image.size[0]}x{image.size[1]} but {annotation_file} "
            f"says {info['width']}x{info['height']}"
        )
    return image, maps


def _crowd_value(
    annotations: list[dict[str, Any]],
    class_of: dict[int, int],
    ignore_index: int | None,
    annotation_file: Path,
) -> int:
    """The value crowd pixels get: ``ignore_index``, checked when the file has crowds."""
    painted = [a for a in annotations if a.get("category_id") in class_of]
    crowds = [a.get("id") for a in painted if a.get("iscrowd")]
    if not crowds:
        return 0  # never painted
    where = f"{annotation_file} has crowd annotations (iscrowd=1; ids {crowds[:5]})"
    if ignore_index is None:
        raise ValueError(
            f"{where}, painted as the ignored value, but ignore_index is None; set "
            "data.ignore_index in the config (ignore_index= in load_coco), e.g. 255, so that "
            "crowd pixels count in no loss or metric"
        )
    if not 0 <= ignore_index <= 255 or ignore_index <= len(class_of):
        raise ValueError(
            f"{where}, painted as data.ignore_index={ignore_index}; expected a value in "
            f"{len(class_of) + 1}..255: above the {len(class_of) + 1} classes (background "
            "included) and within the uint8 label maps, e.g. 255"
        )
    return ignore_index


def _resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize, as `resize_pair` does to labels."""
    return np.asarray(Image.fromarray(label).resize((size, size), Image.Resampling.NEAREST))


def _annotator(annotation: dict[str, Any]) -> Any:
    """The annotation's annotator id, or None."""
    if "annotator" in annotation:
        return annotation["annotator"]
    attributes = annotation.get("attributes")
    return attributes.get("annotator") if isinstance(attributes, dict) else None


def _annotators(annotations: list[dict[str, Any]], annotation_file: Path) -> list[Any]:
    """The annotator ids of a file, sorted (numbers numerically); [] when none is given."""
    ids = [_annotator(a) for a in annotations]
    missing = [a.get("id") for a, who in zip(annotations, ids, strict=True) if who is None]
    if len(missing) == len(ids):
        return []
    if missing:
        raise ValueError(
            f"{annotation_file}: annotations {missing[:5]} have no annotator id while others "
            'do; expected an "annotator" (or attributes.annotator) on every annotation'
        )
    unique = set(ids)
    numeric = all(isinstance(who, int | float) and not isinstance(who, bool) for who in unique)
    return sorted(unique) if numeric else sorted(unique, key=str)


def _paint(
    coco: Any,
    annotations: list[dict[str, Any]],
    shape: tuple[int, int],
    class_of: dict[int, int],
    ignore_index: int,
) -> np.ndarray:
    """One label map (H, W) uint8: larger annotations first, crowds as ``ignore_index``."""
    label = np.zeros(shape, dtype=np.uint8)
    for annotation in sorted(annotations, key=lambda a: -a.get("area", 0)):
        if annotation["category_id"] not in class_of:
            continue
        region = coco.annToMask(annotation) > 0
        label[region] = (
            ignore_index if annotation.get("iscrowd") else class_of[annotation["category_id"]]
        )
    return label
