"""Tiny data sets in the official on-disk layouts (LFW Part Labels, CUB-200-2011, COCO, and
the multi-annotator layout of docs/data.md), written into a test's folder, so that the
loaders and the command can be tested offline in well under a second."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

BLUE, GREEN, RED = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # LFW label colours: bg, skin, hair


def write_lfw_images(root: Path, names, side: int = 20) -> None:
    """Two images per person and their labels: top rows hair, a skin block, background."""
    (root / "lfw_funneled").mkdir(parents=True)
    (root / "parts_lfw_funneled_gt_images").mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        (root / "lfw_funneled" / name).mkdir()
        for number in (1, 2):
            stem = f"{name}_{number:04d}"
            image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "lfw_funneled" / name / f"{stem}.jpg")
            label = np.zeros((side, side, 3), dtype=np.uint8)
            label[:] = BLUE
            label[: side // 4] = RED
            label[side // 2 :, side // 4 : 3 * side // 4] = GREEN
            Image.fromarray(label).save(root / "parts_lfw_funneled_gt_images" / f"{stem}.ppm")


def write_lfw(root: Path, people=("Ann_Lee", "Bo_Diddley", "Cy_Young"), side=20) -> Path:
    """A small LFW Part Labels tree: `write_lfw_images` and the three split lists."""
    write_lfw_images(root, people, side)
    # as in the official lists: unsorted, some numbers zero-padded, some not
    (root / "parts_train.txt").write_text(f"{people[1]} 0002\n{people[0]} 1\n{people[2]} 0001\n")
    (root / "parts_validation.txt").write_text(f"{people[0]} 2\n{people[2]} 0002\n")
    (root / "parts_test.txt").write_text(f"{people[1]} 1\n")
    return root


def write_cub(base: Path, count=10, side=40) -> Path:
    """A small CUB_200_2011 tree under ``base`` (with segmentations/ beside it); returns the
    CUB_200_2011 folder. Each bird is exactly its bounding box, with a faint edge."""
    root = base / "CUB_200_2011"
    (root / "images" / "001.Some_bird").mkdir(parents=True)
    (base / "segmentations" / "001.Some_bird").mkdir(parents=True)
    lines, boxes, split = [], [], []
    for i in range(1, count + 1):
        relative = f"001.Some_bird/Some_bird_{i:04d}_{100 + i}.jpg"
        image = np.full((side, side + 10, 3), 50, dtype=np.uint8)
        mask = np.zeros((side, side + 10), dtype=np.uint8)
        mask[10:30, 20:40] = 255  # the bird: exactly its bounding box
        mask[10:30, 20:25] = 100  # a faint annotator edge, below the 0.5 threshold
        Image.fromarray(image).save(root / "images" / relative)
        Image.fromarray(mask).save((base / "segmentations" / relative).with_suffix(".png"))
        lines.append(f"{i} {relative}")
        boxes.append(f"{i} 20.0 10.0 20.0 20.0")
        split.append(f"{i} {1 if i <= 6 else 0}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return root


def write_coco(root: Path, side=20) -> Path:
    """A COCO-format root as data.dataset=coco reads it by default: images/ and
    annotations/{train,val}.json, two images with one square "cat" each."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for number in (1, 2):
        name = f"{number}.jpg"
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(root / "images" / name)
        images.append({"id": number, "file_name": name, "width": side, "height": side})
    corner = side // 2
    square = [[0, 0, corner, 0, corner, corner, 0, corner]]
    annotations = [
        {"id": i["id"], "image_id": i["id"], "category_id": 1, "segmentation": square,
         "area": corner * corner, "bbox": [0, 0, corner, corner], "iscrowd": 0}
        for i in images
    ]  # fmt: skip
    document = {"images": images, "categories": [{"id": 1, "name": "cat"}],
                "annotations": annotations}  # fmt: skip
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(document))
    return root


# names of the multi-annotator fixture: split -> names; one holds a folder, as LIDC's do
MULTI_ANNOTATOR_SPLITS = {
    "train": ("case1/slice_01", "case1/slice_02", "case2/slice_01", "case3/slice_07"),
    "val": ("case4/slice_03", "case5/slice_01"),
    "test": ("case6/slice_02",),
}


def multi_annotator_mask(name_index: int, annotator: int, side: int = 20) -> np.ndarray:
    """The fixture's mask of image ``name_index`` by ``annotator``: a square whose width
    grows with the annotator (annotator 2 marks class 2 as well), so every map differs."""
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[4:12, 4 : 6 + 2 * annotator + name_index % 3] = 1
    if annotator == 2:
        mask[14:18, 14:18] = 2
    return mask


def write_multi_annotator(root: Path, annotators=("ann_a", "ann_b", "ann_c"), side=20) -> Path:
    """The multi-annotator layout: images/<name>.png, annotations/<annotator>/<name>.png,
    train.txt / val.txt / test.txt and classes.txt (background, nodule, vessel)."""
    rng = np.random.default_rng(0)
    every = [name for names in MULTI_ANNOTATOR_SPLITS.values() for name in names]
    for index, name in enumerate(every):
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (side, side), dtype=np.uint8)  # grey, as CT slices
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        for number, annotator in enumerate(annotators):
            path = root / "annotations" / annotator / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(multi_annotator_mask(index, number, side)).save(path)
    for split, names in MULTI_ANNOTATOR_SPLITS.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "classes.txt").write_text("background\nnodule\nvessel\n")
    return root


def write_coco_annotators(root: Path, side=20, nested=False) -> Path:
    """A COCO root whose annotations carry annotator ids ("annotator", or with ``nested``
    attributes.annotator): two images; annotators 3 and 1 draw squares of different widths on
    image 1; only annotator 3 annotates image 2 (annotator 1 marked nothing there)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for number in (1, 2):
        name = f"{number}.jpg"
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(root / "images" / name)
        images.append({"id": number, "file_name": name, "width": side, "height": side})
    annotations = []
    for ident, (image_id, annotator, width) in enumerate(((1, 3, 10), (1, 1, 6), (2, 3, 8))):
        polygon = [[0, 0, width, 0, width, 10, 0, 10]]
        annotation = {"id": ident + 1, "image_id": image_id, "category_id": 1,
                      "segmentation": polygon, "area": width * 10,
                      "bbox": [0, 0, width, 10], "iscrowd": 0}  # fmt: skip
        if nested:
            annotation["attributes"] = {"annotator": annotator, "occluded": False}
        else:
            annotation["annotator"] = annotator
        annotations.append(annotation)
    document = {"images": images, "categories": [{"id": 1, "name": "lesion"}],
                "annotations": annotations}  # fmt: skip
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(document))
    return root
