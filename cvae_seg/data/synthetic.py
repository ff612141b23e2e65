"""Generated images with a hidden part: several segmentations are plausible for each input.

Each image shows a coloured disc whose right side is covered by a grey occluder. Behind the
occluder the object has one of K "ears" (none, a bar, an upper or a lower block), drawn with
known probabilities; the label is the whole (amodal) object. The visible pixels say nothing
about which ear is there, so p(y|x) has exactly K modes: a deterministic network can only
predict their blurry average, a CVAE should sample each with its probability. It needs no
download and builds in a fraction of a second, for the demo and the smoke tests.
"""

from __future__ import annotations

import numpy as np

from cvae_seg.data.common import SegmentationArrays

__all__ = ["SHAPES_CLASSES", "ear_mask", "make_occluded_shapes"]

SHAPES_CLASSES = ("background", "object")
DEFAULT_MODE_PROBS = (0.5, 0.3, 0.2)
_BACKGROUND, _OCCLUDER = 30, 128


def ear_mask(
    mode: int, cx: float, cy: float, r: float, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """Pixels of ear ``mode`` (0 none, 1 bar, 2 upper block, 3 lower block) of a disc."""
    dx, dy = (xx - cx) / r, (yy - cy) / r
    if mode == 0:
        return np.zeros_like(dx, dtype=bool)
    if mode == 1:
        return (dx >= 0) & (dx <= 2.0) & (np.abs(dy) <= 0.25)
    if mode == 2:
        return (dx >= 0.5) & (dx <= 1.5) & (dy >= -0.8) & (dy <= -0.1)
    if mode == 3:
        return (dx >= 0.5) & (dx <= 1.5) & (dy >= 0.1) & (dy <= 0.8)
    raise ValueError(f"ear mode must be 0-3, got {mode}")


def make_occluded_shapes(
    num_images: int,
    size: int = 64,
    mode_probs: tuple[float, ...] = DEFAULT_MODE_PROBS,
    seed: int = 0,
) -> SegmentationArrays:
    """Generate ``num_images`` (image, label) pairs; names record each image's ear mode."""
    if not 2 <= len(mode_probs) <= 4:
        raise ValueError(f"mode_probs must give 2 to 4 probabilities, got {mode_probs}")
    probs = np.asarray(mode_probs, dtype=np.float64)
    if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"mode_probs must be non-negative and sum to 1, got {mode_probs}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((num_images, size, size, 3), dtype=np.uint8)
    labels = np.empty((num_images, size, size), dtype=np.uint8)
    names = []
    for i in range(num_images):
        r = rng.uniform(0.12, 0.2) * size
        cx = rng.uniform(r + 2, size - 2.3 * r - 2)
        cy = rng.uniform(r + 2, size - r - 2)
        mode = int(rng.choice(len(probs), p=probs))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        obj = disc | ear_mask(mode, cx, cy, r, xx, yy)
        occluder = (xx >= cx + 0.6 * r) & (xx <= cx + 2.2 * r) & (np.abs(yy - cy) <= 0.9 * r)
        colour = rng.integers(90, 256, 3)
        image = np.full((size, size, 3), _BACKGROUND, dtype=np.int32)
        image[obj] = colour
        image[occluder] = _OCCLUDER
        image += rng.integers(-8, 9, image.shape)  # a little sensor noise
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
        labels[i] = obj
        names.append(f"shape{i:05d}_mode{mode}")
    return SegmentationArrays(images, labels, SHAPES_CLASSES, tuple(names))
