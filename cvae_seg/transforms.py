"""Input occlusion as albumentations transforms.

- `RandomSquareOcclusion`: the noise injection ("NI") of Sohn, Lee, Yan (2015): squares of
  side uniform in [min_side, max_side) x the shorter image side set to a fill value.
- `GridBlockOcclusion`: the partial observations of the paper's Table 4: the image cut into
  b x b blocks on a grid, each dropped independently with probability ``drop_prob``.

Both touch the image only (never the mask), draw from the Compose's seeded generator, and
report where they occluded: run the Compose with ``save_applied_params=True`` and pass the
saved ``squares`` / ``dropped`` to `square_mask` (or read ``dropped`` directly).

albumentations' CoarseDropout draws height and width independently and also edits masks;
the paper's noise is square and image-only, hence our own transforms.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field, model_validator

from cvae_seg.checks import integer_at_least

__all__ = ["GridBlockOcclusion", "RandomSquareOcclusion", "grid_block_mask", "square_mask"]

Fill = float | tuple[float, ...]


def _fill_region(image: np.ndarray, region: np.ndarray, fill: Fill) -> np.ndarray:
    """Copy of ``image`` with the boolean (H, W) ``region`` set to ``fill`` (per channel)."""
    channels = 1 if image.ndim == 2 else image.shape[-1]
    values = np.asarray(fill, dtype=np.float64).reshape(-1)
    if values.size not in (1, channels):
        raise ValueError(
            f"fill has {values.size} values but the image has {channels} channels; give one "
            "value or one per channel"
        )
    if np.issubdtype(image.dtype, np.integer):  # numpy would wrap 300 to 44 and cut 0.5 to 0
        limits = np.iinfo(image.dtype)
        if not np.all(
            (values == np.round(values)) & (values >= limits.min) & (values <= limits.max)
        ):
            raise ValueError(
                f"fill {fill!r} does not fit a {image.dtype} image: give whole values in "
                f"{limits.min}..{limits.max}, the image's own units"
            )
    out = image.copy()
    out[region] = values.astype(image.dtype) if values.size > 1 else values[0]
    return out


def square_mask(shape: tuple[int, ...], squares: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the (top, left, side) ``squares`` of a RandomSquareOcclusion."""
    mask = np.zeros(shape[:2], dtype=bool)
    for top, left, side in np.asarray(squares, dtype=np.int64).reshape(-1, 3):
        mask[top : top + side, left : left + side] = True
    return mask


def grid_block_mask(
    height: int, width: int, block_size: int, drop_prob: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean (H, W) mask, True where a b x b grid block is dropped (probability drop_prob)."""
    block_size = integer_at_least("block_size", block_size)
    if not 0 <= drop_prob <= 1:
        raise ValueError(f"drop_prob must be a probability in [0, 1], got {drop_prob!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {rng!r}")
    rows, cols = -(-height // block_size), -(-width // block_size)
    blocks = rng.random((rows, cols)) < drop_prob
    return np.repeat(np.repeat(blocks, block_size, 0), block_size, 1)[:height, :width]


class RandomSquareOcclusion(A.ImageOnlyTransform):
    """Set ``num_squares`` random squares of the image to ``fill``.

    Args:
        max_side: largest side as a fraction of the shorter image side (paper 0.4); sides
            are drawn uniformly from [min_side, max_side) of it, so every square is smaller.
        min_side: smallest side, same units (paper 0).
        num_squares: squares per image (paper 1); they may overlap.
        fill: value, or one value per channel, in the image's own units (paper 0 on [0, 1]).
        p: probability of applying the transform (paper: every training image).

    Unlike the authors' code, which draws one side per minibatch, albumentations works per
    image: each image draws its own side.
    """

    class InitSchema(BaseTransformInitSchema):
        max_side: float = Field(gt=0, le=1)
        min_side: float = Field(ge=0, lt=1)
        num_squares: int = Field(ge=1)
        fill: Fill

        @model_validator(mode="after")
        def _ordered(self) -> RandomSquareOcclusion.InitSchema:
            if self.min_side > self.max_side:
                raise ValueError(
                    f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})"
                )
            return self

    def __init__(
        self,
        max_side: float = 0.4,
        min_side: float = 0.0,
        num_squares: int = 1,
        fill: Fill = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.max_side = max_side
        self.min_side = min_side
        self.num_squares = num_squares
        self.fill = fill

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short = min(height, width)
        fractions = self.random_generator.uniform(self.min_side, self.max_side, self.num_squares)
        sides = np.floor(fractions * short).astype(np.int64)
        tops = self.random_generator.integers(0, height - sides + 1)
        lefts = self.random_generator.integers(0, width - sides + 1)
        return {"squares": np.stack([tops, lefts, sides], axis=1)}

    def apply(self, img: np.ndarray, squares: np.ndarray, **params: Any) -> np.ndarray:
        return _fill_region(img, square_mask(img.shape, squares), self.fill)


class GridBlockOcclusion(A.ImageOnlyTransform):
    """Drop b x b blocks of a grid independently with probability ``drop_prob`` (Table 4).

    Args:
        block_size: block side in pixels (paper 1, 4 or 8).
        drop_prob: probability that a block is dropped (paper 0.25, 0.5 or 0.7).
        fill: value, or one per channel, for dropped pixels.
        p: probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        block_size: int = Field(ge=1)
        drop_prob: float = Field(ge=0, le=1)
        fill: Fill

    def __init__(
        self, block_size: int = 4, drop_prob: float = 0.5, fill: Fill = 0.0, p: float = 1.0
    ) -> None:
        super().__init__(p=p)
        self.block_size = block_size
        self.drop_prob = drop_prob
        self.fill = fill

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        mask = grid_block_mask(
            height, width, self.block_size, self.drop_prob, self.random_generator
        )
        return {"dropped": mask}

    def apply(self, img: np.ndarray, dropped: np.ndarray, **params: Any) -> np.ndarray:
        return _fill_region(img, dropped, self.fill)
