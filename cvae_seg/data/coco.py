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

from cvae_seg.data.common import SegmentationArrays, check_8bit_image, decode_image, resize_pair

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

    Malformed entries are refused naming the file and the annotation (or image) id: no
    categories, an annotation of a category the file does not list, a category asked twice,
    a segmentation pycocotools cannot read, an image entry without its fields.
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    coco = _read_annotations(annotation_file, image_dir)
    known = sorted(coco.getCatIds())
    every = coco.dataset.get("annotations", [])
    _check_categories(every, known, category_ids, annotation_file)
    category_ids = list(category_ids) if category_ids is not None else known
    unknown = sorted(set(category_ids) - set(known))
    if unknown:
        raise ValueError(f"{annotation_file}: category ids {unknown} not found; it has {known}")
    class_of = {cat: index + 1 for index, cat in enumerate(category_ids)}
    names = [c["name"] for c in coco.loadCats(category_ids)]
    painter = _Painter(coco, class_of, _annotators(every, annotation_file),
                       _crowd_value(every, class_of, ignore_index, annotation_file),
                       annotation_file)  # fmt: skip
    images, labels, files = [], [], []
    for image_id in sorted(coco.getImgIds()):
        info = _check_image_entry(coco.loadImgs(image_id)[0], annotation_file)
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


def _check_categories(
    annotations: list[dict[str, Any]],
    known: list[int],
    category_ids: list[int] | None,
    annotation_file: Path,
) -> None:
    """Refuse what would load with classes missing or doubled: a file without categories
    (it would load as background alone), an annotation of a category the file does not list
    (it would be dropped unseen) and a category asked twice (two classes of one)."""
    if not known:
        raise ValueError(
            f'{annotation_file} lists no categories; expected "categories": '
            '[{"id": 1, "name": ...}, ...] with at least one'
        )
    listed = set(known)
    strays = [a for a in annotations if a.get("category_id") not in listed]
    if strays:
        ids = [a.get("id") for a in strays[:5]]
        raise ValueError(
            f"{annotation_file}: annotation id(s) {ids} have category_id "
            f"{strays[0].get('category_id')!r}, which is not in its categories {known}; "
            'expected every annotation\'s category_id to be listed in "categories"'
        )
    if category_ids is None:
        return
    twice = sorted({c for c in category_ids if list(category_ids).count(c) > 1})
    if twice or not category_ids:
        raise ValueError(
            f"{annotation_file}: category_ids {list(category_ids)} "
            + (f"name {twice} more than once" if twice else "is empty")
            + f"; expected distinct ids of its categories {known}, one class each"
        )


_IMAGE_FIELDS = ("id", "file_name", "width", "height")


def _check_image_entry(info: dict[str, Any], annotation_file: Path) -> dict[str, Any]:
    """``info``, an entry of "images", checked for the fields that the loader reads."""
    missing = [key for key in _IMAGE_FIELDS if key not in info]
    size = [info.get("width"), info.get("height")]
    bad_size = not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    if missing or bad_size:
        problem = f"has no {missing}" if missing else f"has width, height {size}"
        raise ValueError(
            f"{annotation_file}: image id {info.get('id')!r} {problem}; expected every image "
            'entry to have "id", "file_name" and a positive integer "width" and "height"'
        )
    return info


_SEGMENTATION = (
    '"segmentation" as polygons [[x1, y1, x2, y2, x3, y3, ...], ...] (3 points or more each) '
    'or an RLE {"size": [height, width], "counts": ...}'
)


def _segmentation_problem(segmentation: Any, shape: tuple[int, int]) -> str | None:
    """What is wrong with a segmentation that pycocotools would fail on, or None."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "an empty segmentation []"
        for polygon in segmentation:
            numbers = isinstance(polygon, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in polygon
            )
            if not numbers or len(polygon) < 6 or len(polygon) % 2:
                return f"a polygon {str(polygon)[:60]}"
        return None
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            return f"an RLE with keys {sorted(segmentation)}"
        if list(np.ravel(segmentation["size"])) != list(shape):
            return f"an RLE of size {segmentation['size']} on an image of height, width {shape}"
        return None
    return f"a segmentation of type {type(segmentation).__name__}"


def _region(
    coco: Any, annotation: dict[str, Any], shape: tuple[int, int], annotation_file: Path
) -> np.ndarray:
    """The annotation's pixels (H, W) bool; a segmentation pycocotools cannot read (it raises
    IndexError, KeyError, TypeError, or a bare Exception, naming neither the annotation nor
    the file) is refused naming both."""
    where = (
        f"{annotation_file}: annotation id {annotation.get('id')!r} "
        f"(image id {annotation.get('image_id')!r})"
    )
    if "segmentation" not in annotation:
        raise ValueError(f"{where} has no segmentation (a bbox alone?); expected {_SEGMENTATION}")
    problem = _segmentation_problem(annotation["segmentation"], shape)
    if problem is None:
        try:
            region = coco.annToMask(annotation) > 0
        except Exception as error:  # pycocotools raises bare Exception too
            if type(error) is not Exception and not isinstance(
                error, IndexError | KeyError | TypeError | ValueError
            ):
                raise
            problem = f"a segmentation pycocotools cannot read ({type(error).__name__}: {error})"
        else:
            if region.shape == shape:
                return region
            problem = f"a segmentation of height, width {region.shape}, not {shape}"
    raise ValueError(f"{where} has {problem}; expected {_SEGMENTATION}")


@dataclass(frozen=True)
class _Painter:
    """What turns an image's annotations into its class map(s): one per annotator."""

    coco: Any
    class_of: dict[int, int]
    annotators: list[Any]
    ignore: int
    source: Path  # the annotation file, for errors

    def maps(self, image_id: int, shape: tuple[int, int]) -> list[np.ndarray]:
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None))
        return [
            _paint(self.coco, [a for a in annotations if _annotator(a) == who], shape,
                   self.class_of, self.ignore, self.source)
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
    image = check_8bit_image(decode_image(path), path)
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
    annotation_file: Path,
) -> np.ndarray:
    """One label map (H, W) uint8: larger annotations first, crowds as ``ignore_index``."""
    label = np.zeros(shape, dtype=np.uint8)
    for annotation in sorted(annotations, key=lambda a: -a.get("area", 0)):
        if annotation["category_id"] not in class_of:
            continue
        region = _region(coco, annotation, shape, annotation_file)
        label[region] = (
            ignore_index if annotation.get("iscrowd") else class_of[annotation["category_id"]]
        )
    return label
