"""Pixel calibration: the expected calibration error (ECE) and its reliability diagram.

Every labelled pixel is one prediction: its confidence is the largest class probability,
and it is correct when that class (the first one, on ties) is the target's.

Conventions, stated once:
- M equal-width bins over [0, 1], right-closed as in Guo et al. 2017: bin m holds the
  confidences in ((m - 1) / M, m / M] (a confidence of exactly 0 goes to the first bin).
- ECE = sum over bins of (n_m / N) |accuracy_m - confidence_m|: the L1 calibration error,
  weighted by the share of pixels in each bin, over all labelled pixels pooled (a global
  count, like the pixel accuracy), not a mean of per-image values. Multi-class: top-1
  confidence against top-1 correctness ("top-label" ECE), classes not averaged separately.
- Pixels whose target is ``ignore_index`` are left out; nothing labelled -> NaN.
- Probabilities must sum to 1 over the classes within the rounding of their dtype (1e-3, or
  a few eps for bfloat16), so a half-precision softmax is accepted as it is.
- The reliability diagram holds, per bin, the mean accuracy and mean confidence (NaN for an
  empty bin) and the pixel count; the ECE is computed from the same sums.

This agrees with torchmetrics' ``MulticlassCalibrationError(norm="l1")`` (the tests check it
where torchmetrics is installed) except for confidences that fall exactly on a bin edge,
which torchmetrics puts in the bin above (a confidence of exactly 1 in a bin of its own).
We keep our own: torchmetrics is not a dependency of cvae_seg, and its calibration metric
stores every confidence it is fed (one per pixel, millions per split) where this
accumulator keeps three sums per bin, exact over batches and cheap to pool across processes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

import cvae_seg.metrics._checks as checks
from cvae_seg import distributed
from cvae_seg.checks import integer_at_least

__all__ = [
    "ExpectedCalibrationError",
    "ReliabilityDiagram",
    "expected_calibration_error",
    "reliability_diagram",
]


class ReliabilityDiagram(NamedTuple):
    """Per-bin statistics of a reliability diagram (M bins; plot accuracy vs confidence).

    ``edges`` (M + 1,), ``accuracy`` and ``confidence`` (M,) float64 means (NaN for an empty
    bin), ``counts`` (M,) int64 pixels per bin.
    """

    edges: torch.Tensor
    accuracy: torch.Tensor
    confidence: torch.Tensor
    counts: torch.Tensor


def _check(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int, ignore_index: int | None
) -> int:
    """Check every argument; ``num_bins`` comes back as an int (numpy integers are taken)."""
    num_bins = integer_at_least("num_bins", num_bins)
    if not isinstance(probs, torch.Tensor) or probs.ndim < 2:
        raise ValueError("probs must be (B, C, ...) class probabilities")
    checks.probabilities("probs", probs, dim=1)
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        raise ValueError("target must hold integer labels (B, ...)")
    if tuple(target.shape) != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(
            f"target must be (B, ...) = {(probs.shape[0], *probs.shape[2:])} for probs "
            f"(B, C, ...) = {tuple(probs.shape)}, got {tuple(target.shape)}"
        )
    checks.label_range("target", target, probs.shape[1], ignore_index)
    return num_bins


def _edges(num_bins: int) -> torch.Tensor:
    return torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)


def _bin_sums(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int, ignore_index: int | None
) -> torch.Tensor:
    """(3, M) float64: pixels, summed confidence and correct pixels per bin."""
    confidence, predicted = probs.double().max(1)
    keep = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else (target != ignore_index)
    )
    confidence, correct = confidence[keep], (predicted == target)[keep].double()
    # right-closed bins ((m - 1) / M, m / M] against the very edges the diagram reports
    inner_edges = _edges(num_bins)[1:-1].to(confidence.device)
    index = torch.bucketize(confidence, inner_edges, right=False)
    sums = torch.zeros(3, num_bins, dtype=torch.float64, device=probs.device)
    sums[0].index_add_(0, index, torch.ones_like(confidence))
    sums[1].index_add_(0, index, confidence)
    sums[2].index_add_(0, index, correct)
    return sums


def _diagram(sums: torch.Tensor) -> ReliabilityDiagram:
    sums = sums.cpu()
    counts = sums[0]
    nan = torch.full_like(counts, float("nan"))
    filled = counts > 0
    accuracy = torch.where(filled, sums[2] / counts.clamp_min(1), nan)
    confidence = torch.where(filled, sums[1] / counts.clamp_min(1), nan)
    return ReliabilityDiagram(_edges(counts.numel()), accuracy, confidence, counts.round().long())


def _ece(sums: torch.Tensor) -> torch.Tensor:
    sums = sums.cpu()
    total = sums[0].sum()
    if total == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    # n_m |acc_m - conf_m| = |correct_m - confidence sum_m|: no division per bin needed
    return (sums[2] - sums[1]).abs().sum() / total


def reliability_diagram(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int = 15, ignore_index: int | None = None
) -> ReliabilityDiagram:
    """Per-bin accuracy, confidence and pixel count: probs (B, C, ...), target (B, ...).

    Conventions of `cvae_seg.metrics.calibration` (right-closed bins, top-1 confidence,
    ``ignore_index`` pixels left out).
    """
    num_bins = _check(probs, target, num_bins, ignore_index)
    return _diagram(_bin_sums(probs, target, num_bins, ignore_index))


def expected_calibration_error(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int = 15, ignore_index: int | None = None
) -> torch.Tensor:
    """Top-label ECE over every labelled pixel, a float64 scalar (NaN when none is labelled).

    ``probs`` (B, C, H, W) (or (B, C, ...)) are class probabilities, for a sampling model the
    mean of the samples' softmax; ``target`` (B, H, W) integer labels. ECE = sum_m (n_m / N)
    |accuracy_m - confidence_m| over ``num_bins`` equal-width bins; the module docstring
    states every convention.
    """
    num_bins = _check(probs, target, num_bins, ignore_index)
    return _ece(_bin_sums(probs, target, num_bins, ignore_index))


class ExpectedCalibrationError:
    """Accumulates the per-bin sums over batches: `compute` gives the ECE of every pixel fed.

    ``update(probs (B, C, ...), target (B, ...))``; `diagram` gives the `ReliabilityDiagram`.
    """

    def __init__(self, num_bins: int = 15, ignore_index: int | None = None) -> None:
        self.num_bins = integer_at_least("num_bins", num_bins)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, self.num_bins, dtype=torch.float64)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        _check(probs, target, self.num_bins, self.ignore_index)
        self.sums += _bin_sums(probs, target, self.num_bins, self.ignore_index).cpu()

    def compute(self) -> torch.Tensor:
        return _ece(self.sums)

    def diagram(self) -> ReliabilityDiagram:
        return _diagram(self.sums)

    def sync(self) -> None:
        """Sum the bins of every torchrun process (a no-op in a single process)."""
        self.sums = distributed.all_reduce_sum(self.sums)
