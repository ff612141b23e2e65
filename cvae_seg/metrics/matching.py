"""Hungarian-matched IoU (HM-IoU): samples and annotations paired one to one, then scored.

The LIDC protocol of Kohl et al. 2019 ("A Hierarchical Probabilistic U-Net"), used since by
the stochastic-segmentation papers that report it beside GED.

Conventions, stated once:
- The IoU of two label maps is 1 - d with d the distance of `pairwise_iou_distance`: the
  IoU averaged over the foreground classes (all but ``background``) present in either map.
  Two maps with no foreground have IoU 1 - ``empty_distance`` (1 by default: they agree);
  an empty map against a non-empty one has IoU 0. For a binary task (LIDC) this is the
  foreground IoU with IoU(empty, empty) = 1, as the public LIDC evaluations score it.
- Different counts: with S samples and A annotations, both sets are replicated to
  L = lcm(S, A) maps (each sample L / S times, each annotation L / A times), so every sample
  and every annotation takes part with equal weight; the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment`` on the cost 1 - IoU) finds the one-to-one
  matching of the L x L copies with the largest total IoU, and HM-IoU is its mean matched
  IoU. When A divides S (16 or 100 samples, 4 LIDC annotators) this is the published rule:
  the annotation set duplicated S / A times to the size of the sample set.
- ``ignore_index``: a pixel that any annotation marks ``ignore_index`` counts in no IoU of
  that image (the rule of GED). An image with no pixel left scores NaN.
- The score is per image; the accumulator averages it over images (NaN images left out).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import cvae_seg.metrics._checks as checks
from cvae_seg.metrics.base import MapDistanceMean
from cvae_seg.metrics.samples import pairwise_iou_distance

__all__ = ["HungarianMatchedIoU", "hungarian_matched_iou"]


def _matched_mean_iou(iou: np.ndarray) -> float:
    """Mean IoU of the best one-to-one matching of the lcm-replicated (S, A) IoU matrix."""
    samples, annotations = iou.shape
    size = math.lcm(samples, annotations)
    rows = np.repeat(np.arange(samples), size // samples)
    columns = np.repeat(np.arange(annotations), size // annotations)
    replicated = iou[np.ix_(rows, columns)]
    matched_rows, matched_columns = linear_sum_assignment(1.0 - replicated)
    return float(replicated[matched_rows, matched_columns].mean())


def hungarian_matched_iou(
    samples: torch.Tensor,
    annotations: torch.Tensor,
    num_classes: int,
    background: int | None = 0,
    empty_distance: float = 0.0,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """HM-IoU per image, (B,) float64: samples (S, B, H, W) against annotations (A, B, H, W).

    Both sets are replicated to lcm(S, A) maps and matched one to one by the Hungarian
    algorithm for the largest total IoU; the score is the mean IoU of the matched pairs, in
    [0, 1]. IoU is 1 - `pairwise_iou_distance` (foreground classes present in either map;
    two empty maps at IoU 1 - ``empty_distance``). Pixels that any annotation marks
    ``ignore_index`` count in no IoU; an image with no pixel left scores NaN. The module
    docstring states every convention.
    """
    checks.sample_sets(
        samples, annotations, num_classes, background, ignore_index, ("samples", "annotations")
    )
    checks.empty_distance(empty_distance)
    valid = checks.valid_pixels(annotations, ignore_index)
    if ignore_index is not None:  # the ignored pixels may hold any label: clear them
        annotations = annotations.masked_fill(~valid[None], 0)
    iou = 1.0 - pairwise_iou_distance(
        samples, annotations, num_classes, background, empty_distance, valid
    )
    iou = iou.double().cpu().numpy()  # (S, A, B)
    scores = [_matched_mean_iou(iou[:, :, b]) for b in range(iou.shape[2])]
    result = torch.tensor(scores, dtype=torch.float64)
    if valid is not None:
        result[~valid.flatten(1).any(1).cpu()] = float("nan")
    return result


class HungarianMatchedIoU(MapDistanceMean):
    """Mean HM-IoU over images (conventions of `cvae_seg.metrics.matching`).

    ``update(samples (S, B, H, W), annotations (A, B, H, W))``.
    """

    def update(self, samples: torch.Tensor, annotations: torch.Tensor) -> None:
        self.add(hungarian_matched_iou(samples, annotations, **self.options))
