"""COCO-format segmentation data (an annotation JSON and an image folder), via pycocotools.

Categories become classes 1..K in the order given (default: sorted category ids); class 0 is
background. Later (smaller) annotations are painted over larger ones; crowd regions are
marked ``ignore_index`` so that they count in no loss or metric.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from cvae_seg.data.common import SegmentationArrays, decode_image, resize_pair

__all__ = ["load_coco"]


def load_coco(
    annotation_file: str | Path,
    image_dir: str | Path,
    size: int = 128,
    category_ids: list[int] | None = None,
    ignore_index: int = 255,
) -> SegmentationArrays:
    """Decode every image of a COCO annotation file into (image, class map) arrays."""
    from pycocotools.coco import COCO

    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {annotation_file} is missing")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder {image_dir} is missing")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as error:  # JSON or its layout
        raise ValueError(
            f"COCO annotation file {annotation_file} cannot be read ({type(error).__name__}: "
            f"{error}); expected COCO JSON with images, annotations and categories"
        ) from None
    known = sorted(coco.getCatIds())
    category_ids = list(category_ids) if category_ids is not None else known
    unknown = sorted(set(category_ids) - set(known))
    if unknown:
        raise ValueError(f"{annotation_file}: category ids {unknown} not found; it has {known}")
    class_of = {cat: index + 1 for index, cat in enumerate(category_ids)}
    names = [c["name"] for c in coco.loadCats(category_ids)]

    images, labels, files = [], [], []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        path = image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"COCO image {path} (id {image_id}) is missing")
        label = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        for annotation in sorted(annotations, key=lambda a: -a.get("area", 0)):
            if annotation["category_id"] not in class_of:
                continue
            region = coco.annToMask(annotation) > 0
            label[region] = (
                ignore_index if annotation.get("iscrowd") else class_of[annotation["category_id"]]
            )
        image = decode_image(path)
        if image.size != (info["width"], info["height"]):
            raise ValueError(
                f"COCO image {path} is {image.size[0]}x{image.size[1]} but {annotation_file} "
                f"says {info['width']}x{info['height']}"
            )
        image_array, label_array = resize_pair(image, Image.fromarray(label), size)
        images.append(image_array)
        labels.append(label_array)
        files.append(info["file_name"])
    if not images:
        raise ValueError(f"{annotation_file} has no images")
    return SegmentationArrays(
        np.stack(images), np.stack(labels), ("background", *names), tuple(files)
    )
