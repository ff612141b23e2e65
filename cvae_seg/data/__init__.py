"""Data sets: LFW Part Labels, CUB-200-2011, COCO-format data, images with several
annotations each (`load_multi_annotator`) and generated shapes (the demo's occluded discs and
the known-truth boxes).

`load_split` turns a `DataConfig` and a split name into decoded arrays (cached as .npz when
``cache_dir`` is set); `build_dataset` wraps them with the split's augmentation. Data with
several annotations per image train on one per image and step (drawn from the sampler's
seed) and evaluate against all of them (docs/data.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cvae_seg.config import DataConfig
from cvae_seg.data.coco import load_coco
from cvae_seg.data.common import (
    ArraySegmentationDataset,
    SegmentationArrays,
    build_transform,
    resolve_root,
)
from cvae_seg.data.cub import load_cub
from cvae_seg.data.known_truth import SPLIT_SEED_OFFSETS, known_truth_split, make_known_truth
from cvae_seg.data.lfw import load_lfw_parts
from cvae_seg.data.mnist import MNISTQuadrants, load_mnist
from cvae_seg.data.multi_annotator import load_multi_annotator
from cvae_seg.data.synthetic import make_occluded_shapes

__all__ = [
    "ArraySegmentationDataset",
    "MNISTQuadrants",
    "SegmentationArrays",
    "build_dataset",
    "build_transform",
    "load_coco",
    "load_cub",
    "load_lfw_parts",
    "load_mnist",
    "load_multi_annotator",
    "load_split",
    "make_known_truth",
    "make_occluded_shapes",
]

SPLITS = ("train", "val", "test")
_NEWER_KEYS = ("known_truth_annotators", "known_truth_holdout")


def _generate(config: DataConfig, split: str) -> SegmentationArrays:
    """A generated split; a setting the generator refuses is named by its config key."""
    count = config.shapes_train if split == "train" else config.shapes_val
    seed = SPLIT_SEED_OFFSETS[split] + 1000 * config.split_seed
    keys = "data.size, data.shapes_modes"
    try:
        if config.dataset == "shapes":
            return make_occluded_shapes(count, config.size, config.shapes_modes, seed)
        keys = "data.size, data.known_truth_modes, data.known_truth_holdout"
        truth = known_truth_split(
            split,
            count,
            config.size,
            config.known_truth_modes,
            config.split_seed,
            config.known_truth_annotators,
            config.known_truth_holdout,
        )
        return truth.arrays
    except ValueError as error:
        raise ValueError(f"data.dataset={config.dataset} ({keys}): {error}") from None


def _decode(config: DataConfig, split: str) -> SegmentationArrays:
    if config.dataset in ("shapes", "known_truth"):
        return _generate(config, split)
    root = resolve_root(config.root, config.dataset)
    if config.dataset == "lfw":
        return load_lfw_parts(root, split, config.size)
    if config.dataset == "multi_annotator":
        return load_multi_annotator(root, split, config.size, config.ignore_index)
    if config.dataset == "cub":
        return load_cub(
            root,
            split,
            config.size,
            config.cub_margin,
            config.cub_threshold,
            config.val_fraction,
            config.split_seed,
        )
    annotation = {"train": config.coco_train, "val": config.coco_val, "test": config.coco_test}[
        split
    ]
    if annotation is None:
        raise ValueError("data.coco_test is not set: the COCO-format data has no test split")
    return load_coco(
        root / annotation,
        root / config.coco_images,
        config.size,
        ignore_index=config.ignore_index,
    )


def load_split(config: DataConfig, split: str) -> SegmentationArrays:
    """Decoded arrays of one split, from ``config.cache_dir`` when cached there before."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if config.cache_dir is None:
        return _decode(config, split)
    decoding = config.model_dump(
        exclude={"batch_size", "num_workers", "flip", "noise", "mean", "std", "cache_dir"}
    )
    for key in _NEWER_KEYS:  # at their defaults, left out: caches made before them stay valid
        if decoding[key] == DataConfig.model_fields[key].default:
            del decoding[key]
    if Path(config.cache_dir).exists() and not Path(config.cache_dir).is_dir():
        raise NotADirectoryError(
            f"data.cache_dir {config.cache_dir} is a file; expected a folder for decoded splits"
        )
    key = hashlib.sha1(json.dumps(decoding, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(config.cache_dir) / f"{config.dataset}_{split}_{config.size}_{key}.npz"
    if path.is_file():
        return SegmentationArrays.load(path)
    arrays = _decode(config, split)
    arrays.save(path)
    return arrays


def build_dataset(
    config: DataConfig, split: str, train: bool
) -> ArraySegmentationDataset | MNISTQuadrants:
    """The split as a Dataset, augmented (flips, noise) only when ``train``.

    MNIST quadrant completion is not augmented (the paper's protocol). With several
    annotations per image, a ``train`` item's "mask" is one annotation drawn from its seed,
    an evaluation item's is the first, with all of them as "masks" (A, H, W).
    """
    if not isinstance(config, DataConfig):
        given = "the whole Config; pass config.data" if hasattr(config, "data") else repr(config)
        raise TypeError(f"build_dataset takes a DataConfig (config.data), got {given}")
    if config.dataset == "mnist":
        images, _ = load_mnist(resolve_root(config.root, "mnist"), split, config.mnist_val_size)
        return MNISTQuadrants(images, config.mnist_observed, config.binarize)
    transform = build_transform(train, config.flip, config.noise, config.mean, config.std)
    return ArraySegmentationDataset(load_split(config, split), transform, draw_annotator=train)
