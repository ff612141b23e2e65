"""Sample-set metrics: how a set of sampled label maps compares with the references.

Samples are (S, B, H, W) integer label maps drawn from a model for B images; references are
(R, B, H, W) label maps from the data (the annotators, or the support of a known
distribution), optionally weighted by their probabilities.

Conventions, stated once:
- The distance between two maps is d = 1 - IoU, the IoU averaged over the foreground
  classes (every class but ``background``) present in either map of the pair, as the
  Probabilistic U-Net's evaluation does (PHiSeg's and the SSN's code instead average over
  every foreground class, counting a class absent from both maps as IoU 1;
  tests/test_metrics_public.py checks both against their numbers).
- A pair in which neither map has a foreground pixel is at ``empty_distance`` (default 0:
  two empty maps agree; it must lie in [0, 1] like every other distance); an empty map
  against a non-empty one is at distance 1.
- ``valid``, a (B, H, W) bool tensor (no other dtype: an integer mask would be combined
  bitwise), restricts every distance of image b to its valid pixels. With
  ``ignore_index``, GED and diversity derive it from the references: a pixel that any
  reference marks ``ignore_index`` is left out of every distance of that image (diversity
  needs the references passed for that). An image with no pixel left scores NaN, and the
  accumulators leave it out of their mean.
- GED is D^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')], the expectations over the
  empirical distributions: every ordered pair, self-pairs included (the plug-in estimate,
  as the Probabilistic U-Net and PHiSeg evaluations compute it), the references weighted
  by ``reference_weights`` when given (then E over Y is exact for a known distribution).
  With S samples the self-pairs make E[d(S, S')] (S - 1) / S times the mean over distinct
  pairs, so S exact draws from the reference distribution score E[d(Y, Y')] / S, not 0.
  ``squared=False`` gives D = sqrt(max(D^2, 0)) (1 - IoU need not be of negative type, so
  D^2 of a finite sample can fall slightly below 0).
- Diversity is E[d(S, S')] over distinct ordered pairs (i != j), self-pairs excluded.
"""

from __future__ import annotations

import torch

import cvae_seg.metrics._checks as checks
from cvae_seg.metrics.base import MapDistanceMean

__all__ = [
    "GeneralizedEnergyDistance",
    "SampleDiversity",
    "generalized_energy_distance",
    "pairwise_iou_distance",
    "sample_diversity",
]


def _one_hot_foreground(
    maps: torch.Tensor, num_classes: int, background: int | None, valid: torch.Tensor | None
) -> torch.Tensor:
    """(N, B, H, W) -> (N, B, P, K) float indicators of the K foreground classes."""
    classes = [c for c in range(num_classes) if c != background]
    indicators = torch.stack([maps == c for c in classes], -1)
    if valid is not None:
        indicators = indicators & valid[None, ..., None]
    return indicators.flatten(2, -2).float()


def _iou_distance(
    first: torch.Tensor,
    second: torch.Tensor,
    num_classes: int,
    background: int | None,
    empty_distance: float,
    valid: torch.Tensor | None,
) -> torch.Tensor:
    """The computation of `pairwise_iou_distance`, on arguments already checked."""
    a = _one_hot_foreground(first, num_classes, background, valid)  # N, B, P, K
    b = _one_hot_foreground(second, num_classes, background, valid)
    intersection = torch.einsum("nbpk,mbpk->nmbk", a, b)
    union = a.sum(2).unsqueeze(1) + b.sum(2).unsqueeze(0) - intersection
    present = union > 0
    # counts are exact in float32 (below 2^24 pixels); their ratio is taken in float64
    iou = torch.where(present, intersection.double() / union.clamp_min(1).double(), 0.0)
    count = present.sum(-1)
    mean = iou.sum(-1) / count.clamp_min(1)
    return torch.where(count > 0, 1.0 - mean, empty_distance)


def pairwise_iou_distance(
    first: torch.Tensor,
    second: torch.Tensor,
    num_classes: int,
    background: int | None = 0,
    empty_distance: float = 0.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """d = 1 - IoU between every pair of label maps: (N, B, H, W), (M, B, H, W) -> (N, M, B).

    IoU is averaged over the classes (all but ``background``) present in either map of the
    pair; a pair in which neither map has such a class is at ``empty_distance`` (a distance,
    in [0, 1]). Only the pixels where ``valid`` (B, H, W) bool is True count, when given.
    """
    checks.sample_sets(first, second, num_classes, background, names=("first", "second"))
    checks.empty_distance(empty_distance)
    checks.valid_mask(valid, first.shape[1:])
    return _iou_distance(first, second, num_classes, background, empty_distance, valid)


def _reference_weights(weights: torch.Tensor | None, count: int, batch: int) -> torch.Tensor:
    """(R, B) float64 probabilities of the references (uniform when ``weights`` is None)."""
    if weights is None:
        return torch.full((count, batch), 1.0 / count, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim == 1:
        weights = weights[:, None].expand(-1, batch)
    if weights.shape != (count, batch):
        raise ValueError(f"reference_weights must be (R,) or (R, B) = ({count}, {batch})")
    if (weights < 0).any() or not torch.allclose(weights.sum(0), torch.ones(batch).double()):
        raise ValueError("reference_weights must be non-negative and sum to 1 over R")
    return weights


def _nothing_to_score(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """NaN for the images (B,) that have no valid pixel left: there is nothing to score."""
    if valid is None:
        return scores
    empty = ~valid.flatten(1).any(1).to(scores.device)
    return scores.masked_fill(empty, float("nan"))


def generalized_energy_distance(
    samples: torch.Tensor,
    references: torch.Tensor,
    num_classes: int,
    background: int | None = 0,
    empty_distance: float = 0.0,
    reference_weights: torch.Tensor | None = None,
    ignore_index: int | None = None,
    squared: bool = True,
) -> torch.Tensor:
    """Generalized energy distance per image, (B,) float64: D^2, or D with ``squared=False``.

    D^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')] with d = 1 - IoU (`pairwise_iou_distance`),
    samples (S, B, H, W) from the model, references (R, B, H, W) from the data (R may be 1).
    Every expectation runs over all ordered pairs, self-pairs included; the references are
    weighted by ``reference_weights`` ((R,) or (R, B), summing to 1 over R; uniform when
    None). Pixels that any reference marks ``ignore_index`` count in no distance; an image
    with no pixel left scores NaN.
    """
    checks.sample_sets(samples, references, num_classes, background, ignore_index)
    checks.empty_distance(empty_distance)
    weights = _reference_weights(reference_weights, references.shape[0], references.shape[1])
    valid = checks.valid_pixels(references, ignore_index)
    weights = weights.to(samples.device)
    options = dict(
        num_classes=num_classes, background=background, empty_distance=empty_distance, valid=valid
    )
    cross = _iou_distance(samples, references, **options).double()  # (S, R, B)
    within_s = _iou_distance(samples, samples, **options).double()
    within_r = _iou_distance(references, references, **options).double()
    expected_cross = (cross * weights[None]).sum(1).mean(0)
    expected_r = torch.einsum("rb,rqb,qb->b", weights, within_r, weights)
    squared_distance = 2 * expected_cross - within_s.mean((0, 1)) - expected_r
    squared_distance = _nothing_to_score(squared_distance, valid)
    return squared_distance if squared else squared_distance.clamp_min(0).sqrt()


def sample_diversity(
    samples: torch.Tensor,
    num_classes: int,
    background: int | None = 0,
    empty_distance: float = 0.0,
    valid: torch.Tensor | None = None,
    references: torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Mean distance between distinct samples of the same image, (B,) float64.

    The mean runs over the S (S - 1) ordered pairs i != j: a sample is never compared with
    itself, so two empty maps add ``empty_distance`` once per pair of distinct samples; one
    sample scores 0. Only the pixels where ``valid`` (B, H, W) is True count; with
    ``ignore_index``, also only those that no map of ``references`` (R, B, H, W) marks
    ``ignore_index`` (the pixels GED scores). An image with no pixel left scores NaN.
    """
    checks.sample_sets(samples, references, num_classes, background, ignore_index)
    checks.empty_distance(empty_distance)
    checks.valid_mask(valid, samples.shape[1:])
    valid = checks.valid_pixels(references, ignore_index, valid)
    count = samples.shape[0]
    if count < 2:
        zeros = torch.zeros(samples.shape[1], dtype=torch.float64, device=samples.device)
        return _nothing_to_score(zeros, valid)
    distances = _iou_distance(samples, samples, num_classes, background, empty_distance, valid)
    distances = distances.double()
    off_diagonal = distances.sum((0, 1)) - distances.diagonal(dim1=0, dim2=1).sum(-1)
    return _nothing_to_score(off_diagonal / (count * (count - 1)), valid)


class GeneralizedEnergyDistance(MapDistanceMean):
    """Mean GED over images (D^2 unless ``squared=False``; conventions of the module).

    ``update(samples (S, B, H, W), references (R, B, H, W), reference_weights=None)``.
    """

    def __init__(
        self,
        num_classes: int,
        background: int | None = 0,
        empty_distance: float = 0.0,
        ignore_index: int | None = None,
        squared: bool = True,
    ) -> None:
        super().__init__(num_classes, background, empty_distance, ignore_index)
        self.options["squared"] = squared

    def update(
        self,
        samples: torch.Tensor,
        references: torch.Tensor,
        reference_weights: torch.Tensor | None = None,
    ) -> None:
        self.add(
            generalized_energy_distance(
                samples, references, reference_weights=reference_weights, **self.options
            )
        )


class SampleDiversity(MapDistanceMean):
    """Mean distance between distinct samples of one image, averaged over images.

    ``update(samples (S, B, H, W), valid=None, references=None)``; ``references`` are needed
    only with ``ignore_index`` (conventions of `sample_diversity`).
    """

    def update(
        self,
        samples: torch.Tensor,
        valid: torch.Tensor | None = None,
        references: torch.Tensor | None = None,
    ) -> None:
        self.add(sample_diversity(samples, valid=valid, references=references, **self.options))
