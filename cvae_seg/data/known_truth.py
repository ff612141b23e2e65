"""Generated images whose true conditional distribution of label maps is known exactly.

Each image shows a coloured box on a dark background with a grey occluder flush against its
right side. Behind the occluder the object has one of K parts, drawn with known
probabilities; the label is the whole (amodal) object. Everything is laid out on an 8 x 8 grid
of square cells (4 px at 32 px), with no noise and no anti-aliasing, so every pixel outside the
occluder, and the occluder's background, is exactly predictable from the visible pixels:
p(y|x) puts mass pi_k on exactly K label maps, which `KnownTruthSet.candidates` lists.
The true -log p(y|x) of any pair (`true_log_likelihood`, nats per image), the conditional
entropy H = -sum pi log pi and the true mode frequencies are then exact numbers to hold a
model's estimates against (benchmarks/known_truth.py; the sample metrics against the
candidates are in `cvae_seg.metrics.modes` and `cvae_seg.metrics.samples`).

Two options of the LIDC-style protocol, both off by default (the published numbers use
neither): ``annotators`` A > 1 gives each image A annotations drawn independently from its
true distribution (``arrays.annotations``, the first being ``arrays.labels``), to score
samples against annotators as on LIDC-IDRI; ``holdout`` > 0 reserves that share of the 336
layouts (box and occluder geometry, `known_truth_layouts`) for the test split: the training
and validation splits never draw them, so part of the test split (``held_out``) shows
layouts no model saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvae_seg.checks import integer_at_least
from cvae_seg.data.common import SegmentationArrays

__all__ = [
    "DEFAULT_MODE_PROBS",
    "HIDDEN_PARTS",
    "KNOWN_TRUTH_CLASSES",
    "SPLIT_SEED_OFFSETS",
    "TEST_SPLITS",
    "KnownTruthSet",
    "conditional_entropy",
    "default_mode_probs",
    "held_out_layouts",
    "known_truth_layouts",
    "known_truth_split",
    "make_known_truth",
    "true_log_likelihood",
]

KNOWN_TRUTH_CLASSES = ("background", "object")
GRID = 8  # the layout's cells per side
_BACKGROUND, _OCCLUDER = 30, 128
_HIDDEN_ROWS, _HIDDEN_COLS = 3, 2  # the occluder, in cells; column 0 touches the object
# The hidden parts as sets of (row, column) cells of the occluder, ordered so that the first
# K of them make task K. Every two differ in at least one whole cell.
HIDDEN_PARTS: tuple[frozenset[tuple[int, int]], ...] = tuple(
    frozenset(cells)
    for cells in (
        (),  # no part
        ((1, 0), (1, 1)),  # a bar at mid height
        ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)),  # a block the occluder's size
        ((0, 0), (0, 1)),  # a bar at the top
        ((2, 0), (2, 1)),  # a bar at the bottom
        ((0, 0), (1, 0), (2, 0)),  # a column along the object
        ((0, 0), (0, 1), (2, 0), (2, 1)),  # a fork
        ((0, 0), (1, 0), (1, 1)),  # a hook
    )
)
# a split's generator seed is its offset + 1000 * split_seed (the data config's split_seed);
# "test2" is a second test split of new pairs, for scoring once more when the test split's
# numbers have already guided a choice (benchmarks only: no data config loads it)
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1, "test": 2, "test2": 3}
TEST_SPLITS = ("test", "test2")
# mixed into seeds so that the annotators' draws and the held-out layouts are streams of
# their own: turning either option on leaves the images and labels as they were
_ANNOTATION_STREAM, _HOLDOUT_STREAM = 0x616E6E, 0x686F6C64
DEFAULT_MODE_PROBS: dict[int, tuple[float, ...]] = {
    2: (0.7, 0.3),
    4: (0.4, 0.3, 0.2, 0.1),
    8: (0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.04),
}


def default_mode_probs(num_modes: int) -> tuple[float, ...]:
    """The benchmark's unequal probabilities for K = 2, 4 or 8 hidden parts."""
    if num_modes not in DEFAULT_MODE_PROBS:
        raise ValueError(f"default probabilities exist for K in (2, 4, 8), got {num_modes}")
    return DEFAULT_MODE_PROBS[num_modes]


@dataclass
class KnownTruthSet:
    """A generated split and its exact conditional distribution.

    ``candidates`` (N, K, H, W) uint8: the label map of each hidden part for each image, with
    probabilities ``probs`` (K,); ``hidden`` (N, H, W) bool: the occluder's pixels; ``modes``
    (N,): the part drawn for ``arrays.labels``; ``annotation_modes`` (N, A): the part of each
    annotation (column 0 is ``modes``); ``layouts`` (N, 5): each image's `Layout`;
    ``held_out`` (N,) bool: the images whose layout is reserved for the test split.
    """

    arrays: SegmentationArrays
    candidates: np.ndarray
    probs: np.ndarray
    hidden: np.ndarray
    modes: np.ndarray
    annotation_modes: np.ndarray | None = None
    layouts: np.ndarray | None = None
    held_out: np.ndarray | None = None

    @property
    def entropy(self) -> float:
        """H(y|x) in nats per image: the same for every image (the K maps always differ)."""
        return conditional_entropy(self.probs)


def _validate(mode_probs: tuple[float, ...], size: int) -> np.ndarray:
    probs = np.asarray(mode_probs, dtype=np.float64)
    if not 1 <= len(probs) <= len(HIDDEN_PARTS):
        raise ValueError(
            f"mode_probs must give 1 to {len(HIDDEN_PARTS)} probabilities, got {mode_probs}"
        )
    if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"mode_probs must be non-negative and sum to 1, got {mode_probs}")
    if size < 16 or size % GRID:
        raise ValueError(f"size must be a multiple of {GRID} and at least 16, got {size}")
    return probs / probs.sum()


# (width, height, left, top, occluder offset) in cells: the box is width x height at
# (left, top); the 3-cell occluder starts ``offset`` cells below the box's top
Layout = tuple[int, int, int, int, int]


def known_truth_layouts() -> tuple[Layout, ...]:
    """Every layout the generator can draw (336 on the 8 x 8 grid), in a fixed order."""
    return tuple(
        (width, height, left, top, offset)
        for width in range(2, 5)
        for height in range(_HIDDEN_ROWS, _HIDDEN_ROWS + 3)
        for left in range(GRID - width - _HIDDEN_COLS + 1)
        for top in range(GRID - height + 1)
        for offset in range(height - _HIDDEN_ROWS + 1)
    )


def held_out_layouts(fraction: float, seed: int = 0) -> frozenset[Layout]:
    """round(fraction x 336) layouts reserved for the test split, chosen by ``seed``."""
    layouts = known_truth_layouts()
    count = round(fraction * len(layouts))
    if not 0 <= count < len(layouts):
        raise ValueError(
            f"holdout must leave layouts to train on: 0 <= fraction < 1, got {fraction}"
        )
    order = np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(len(layouts))
    return frozenset(layouts[i] for i in order[:count])


def _draw_layout(rng: np.random.Generator, excluded: frozenset[Layout]) -> Layout:
    """A layout drawn as the generator always has, redrawn while it is ``excluded``."""
    while True:
        width = int(rng.integers(2, 5))  # the visible box, in cells
        height = int(rng.integers(_HIDDEN_ROWS, _HIDDEN_ROWS + 3))
        left = int(rng.integers(0, GRID - width - _HIDDEN_COLS + 1))
        top = int(rng.integers(0, GRID - height + 1))
        offset = int(rng.integers(0, height - _HIDDEN_ROWS + 1))
        if (width, height, left, top, offset) not in excluded:
            return width, height, left, top, offset


def make_known_truth(
    num_images: int,
    size: int = 32,
    mode_probs: tuple[float, ...] = DEFAULT_MODE_PROBS[4],
    seed: int = 0,
    annotators: int = 1,
    excluded_layouts: frozenset[Layout] = frozenset(),
) -> KnownTruthSet:
    """Generate ``num_images`` pairs with their K candidate label maps; seeded.

    ``annotators`` A > 1: each image also gets A annotations, the first its label, the
    others drawn independently from its true distribution (a stream of their own: the
    images and labels are those of A = 1). ``excluded_layouts``: layouts never drawn.
    """
    probs = _validate(mode_probs, size)
    integer_at_least("annotators", annotators)
    cell = size // GRID
    rng = np.random.default_rng(seed)
    images = np.full((num_images, size, size, 3), _BACKGROUND, dtype=np.uint8)
    candidates = np.zeros((num_images, len(probs), size, size), dtype=np.uint8)
    hidden = np.zeros((num_images, size, size), dtype=bool)
    layouts = np.zeros((num_images, 5), dtype=np.int64)
    modes = rng.choice(len(probs), size=num_images, p=probs)
    for i in range(num_images):
        layouts[i] = width, height, left, top, offset = _draw_layout(rng, excluded_layouts)
        box = np.zeros((GRID, GRID), dtype=bool)
        box[top : top + height, left : left + width] = True
        occluded = np.zeros_like(box)
        occluder_top, right = top + offset, left + width
        occluded[occluder_top : occluder_top + _HIDDEN_ROWS, right : right + _HIDDEN_COLS] = True
        for k in range(len(probs)):
            part = np.zeros_like(box)
            for row, column in HIDDEN_PARTS[k]:
                part[occluder_top + row, right + column] = True
            candidates[i, k] = np.kron(box | part, np.ones((cell, cell), dtype=bool))
        hidden[i] = np.kron(occluded, np.ones((cell, cell), dtype=bool))
        colour = rng.integers(50, 100, 3)  # one strong channel: never near the grey occluder
        colour[rng.integers(3)] = rng.integers(180, 256)
        images[i][candidates[i, 0].astype(bool) & ~hidden[i]] = colour
        images[i][hidden[i]] = _OCCLUDER
    extra = np.random.default_rng([seed, _ANNOTATION_STREAM]).choice(
        len(probs), size=(num_images, annotators - 1), p=probs
    )
    annotation_modes = np.concatenate([modes[:, None], extra], 1)
    annotations = np.take_along_axis(candidates, annotation_modes[..., None, None], 1)
    names = tuple(f"known{i:05d}_mode{mode}" for i, mode in enumerate(modes))
    arrays = SegmentationArrays(
        images,
        annotations[:, 0].copy(),
        KNOWN_TRUTH_CLASSES,
        names,
        annotations if annotators > 1 else None,
    )
    held_out = np.array([tuple(row) in excluded_layouts for row in layouts.tolist()], dtype=bool)
    return KnownTruthSet(
        arrays, candidates, probs, hidden, modes, annotation_modes, layouts, held_out
    )


def known_truth_split(
    split: str,
    num_images: int,
    size: int = 32,
    mode_probs: tuple[float, ...] = DEFAULT_MODE_PROBS[4],
    split_seed: int = 0,
    annotators: int = 1,
    holdout: float = 0.0,
) -> KnownTruthSet:
    """The ``split`` ("train", "val" or "test") that a data config with these values loads,
    or "test2": new pairs drawn like the test split's, which no data config loads.

    Its seed is ``SPLIT_SEED_OFFSETS[split] + 1000 * split_seed``, so the arrays equal
    `cvae_seg.data.load_split`'s and the candidates, probabilities and occluder come with them.
    ``holdout`` > 0 reserves `held_out_layouts(holdout, split_seed)` for the test splits: the
    training and validation splits never draw them; a test split draws every layout as
    before, and ``held_out`` marks its images whose layout training never saw.
    """
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_OFFSETS)}, got {split!r}")
    seed = SPLIT_SEED_OFFSETS[split] + 1000 * split_seed
    reserved = held_out_layouts(holdout, split_seed)
    truth = make_known_truth(
        num_images, size, mode_probs, seed, annotators,
        frozenset() if split in TEST_SPLITS else reserved,
    )  # fmt: skip
    if split in TEST_SPLITS:
        truth.held_out = np.array([tuple(r) in reserved for r in truth.layouts.tolist()], bool)
    return truth


def true_log_likelihood(
    labels: np.ndarray, candidates: np.ndarray, probs: np.ndarray
) -> np.ndarray:
    """log p(y|x) = log sum_k pi_k [y == y_k] for labels (N, H, W), candidates (N, K, H, W).

    Candidates that coincide add up; a label map equal to none of them gets -inf.
    """
    equal = (candidates == labels[:, None]).reshape(*candidates.shape[:2], -1).all(-1)
    with np.errstate(divide="ignore"):
        return np.log(equal.astype(np.float64) @ np.asarray(probs, dtype=np.float64))


def conditional_entropy(probs: np.ndarray | tuple[float, ...]) -> float:
    """-sum pi log pi in nats: H(y|x) when the K candidate maps are distinct."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
