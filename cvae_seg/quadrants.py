"""The MNIST task's observed quadrants, shared by its data set and its model (a module of
its own, so that importing the model does not import the data loaders)."""

from __future__ import annotations

import numpy as np

__all__ = ["quadrant_mask"]


def quadrant_mask(observed: int, side: int = 28) -> np.ndarray:
    """Boolean (side, side) mask of the observed quadrants for 1, 2 or 3 observed quadrants."""
    if observed not in (1, 2, 3):
        raise ValueError(f"observed quadrants must be 1, 2 or 3, got {observed}")
    half = side // 2
    mask = np.zeros((side, side), dtype=bool)
    mask[half:, :half] = True  # bottom-left, observed in every task
    if observed >= 2:
        mask[:half, :half] = True  # top-left: the left half
    if observed == 3:
        mask[:half, half:] = True  # top-right: all but bottom-right
    return mask
