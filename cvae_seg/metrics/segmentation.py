"""Segmentation metrics on integer label maps: pure functions and accumulators.

Every function takes ``pred`` and ``target`` of the same shape (B, H, W) and skips pixels
whose target equals ``ignore_index``. Accumulators follow torchmetrics' update / compute /
reset and count globally over everything they were fed, which is what the paper's pixel
accuracy is (correct pixels over all labelled pixels of the split).

Conventions:
- nothing labelled -> NaN (there is nothing to score);
- per-class IoU is NaN for a class absent from both prediction and target, and the mean IoU
  averages the other classes;
- class accuracy averages the per-class recall over the classes present in the target;
- foreground IoU (the paper's CUB IoU) scores 0 when prediction and target are both empty,
  and NaN for an image with no labelled pixel (every target pixel ``ignore_index``), which
  `foreground_iou` and `ForegroundIoU` leave out of their mean.
- labels must be classes: in [0, num_classes) (targets also ``ignore_index``) wherever
  ``num_classes`` is given; `pixel_accuracy` and the foreground IoU take it as an option and
  without it refuse only negative labels (they cannot tell 255 from a class).
"""

from __future__ import annotations

import torch

import cvae_seg.metrics._checks as checks
from cvae_seg import distributed
from cvae_seg.checks import integer_at_least
from cvae_seg.metrics.base import ImageMean

__all__ = [
    "ClassAccuracy",
    "ConfusionMatrix",
    "ForegroundIoU",
    "MeanIoU",
    "PixelAccuracy",
    "class_accuracy",
    "confusion_matrix",
    "foreground_iou",
    "mean_iou",
    "per_class_iou",
    "per_image_foreground_iou",
    "pixel_accuracy",
]


# ------------------------------------------------------------------------- validation
def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of integer labels, got {type(value).__name__}"
                " (torch.as_tensor converts a numpy array)"
            )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    for name, tensor in (("pred", pred), ("target", target)):
        if tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(f"{name} must hold integer labels (argmax the logits first)")


def _check_labels(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int | None, ignore_index: int | None
) -> None:
    """Labels out of range would silently count as a class (or as foreground): refuse them.

    With ``num_classes``, the checks of `confusion_matrix`; without it, only what holds for
    any number of classes: no negative label (an ``ignore_index`` may itself be a class the
    model predicts, so a prediction equal to it is refused only through ``num_classes``).
    """
    if num_classes is not None:
        checks.label_range("target", target, num_classes, ignore_index)
        checks.label_range("pred", pred, num_classes, None)
        return
    labels = target if ignore_index is None else target[target != ignore_index]
    if labels.numel() and int(labels.min()) < 0:
        allowed = "" if ignore_index is None else f" or be ignore_index={ignore_index}"
        raise ValueError(f"target labels must be non-negative class indices{allowed}")
    if pred.numel() and int(pred.min()) < 0:
        raise ValueError("pred labels must be non-negative class indices")


def _labelled(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )


# ------------------------------------------------------------------------- functions
def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = target class, columns = predicted class."""
    num_classes = integer_at_least("num_classes", num_classes)
    _check_pair(pred, target)
    keep = _labelled(target, ignore_index)
    target, pred = target[keep].long(), pred[keep].long()
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must lie in [0, {num_classes}) or be ignore_index")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"pred labels must lie in [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)


def _accuracy_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    total = confusion.sum()
    return confusion.diagonal().sum() / total if total > 0 else torch.tensor(float("nan"))


def _class_accuracy_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    per_class = confusion.diagonal() / confusion.sum(1)  # NaN for classes absent from target
    return per_class.nanmean()


def _iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    intersection = confusion.diagonal().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diagonal()
    return torch.where(union > 0, intersection / union.clamp_min(1), float("nan"))


def pixel_accuracy(
    pred: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Correct labelled pixels over all labelled pixels (global count, not an image mean).

    Give ``num_classes`` to have every label checked against [0, num_classes), as
    `PixelAccuracy` does: an unignored 255 in the target would otherwise score as a miss.
    """
    if num_classes is not None:
        num_classes = integer_at_least("num_classes", num_classes)
    _check_pair(pred, target)
    _check_labels(pred, target, num_classes, ignore_index)
    keep = _labelled(target, ignore_index)
    total = keep.sum()
    if total == 0:
        return torch.tensor(float("nan"))
    return ((pred == target) & keep).sum() / total


def class_accuracy(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Per-class pixel accuracy (recall) averaged over the classes present in target."""
    return _class_accuracy_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def per_class_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(num_classes,) IoU over all pixels given; NaN for classes absent from both."""
    return _iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Mean of `per_class_iou` over the classes that occur in prediction or target."""
    return per_class_iou(pred, target, num_classes, ignore_index).nanmean()


def per_image_foreground_iou(
    pred: torch.Tensor,
    target: torch.Tensor,
    background: int = 0,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """(B,) IoU of the foreground (every label but ``background``) of each image.

    Empty prediction and empty target score 0, the paper's convention for CUB; an image
    with no labelled pixel scores NaN (nothing to score, not a failure). Labels are checked
    against [0, num_classes) when ``num_classes`` is given (module conventions otherwise).
    """
    if num_classes is not None:
        num_classes = integer_at_least("num_classes", num_classes)
    _check_pair(pred, target)
    _check_labels(pred, target, num_classes, ignore_index)
    keep = _labelled(target, ignore_index)
    pred_fg = (pred != background) & keep
    target_fg = (target != background) & keep
    intersection = (pred_fg & target_fg).flatten(1).sum(1)
    union = (pred_fg | target_fg).flatten(1).sum(1)
    scores = torch.where(union > 0, intersection / union.clamp_min(1), 0.0)
    if ignore_index is None:
        return scores
    return scores.masked_fill(~keep.flatten(1).any(1), float("nan"))


def foreground_iou(
    pred: torch.Tensor,
    target: torch.Tensor,
    background: int = 0,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Per-image foreground IoU averaged over images (the paper's CUB IoU), a scalar.

    Images with no labelled pixel (NaN) are left out, as `ForegroundIoU` leaves them out;
    NaN when no image is left.
    """
    scores = per_image_foreground_iou(
        pred, target, background, ignore_index, num_classes=num_classes
    )
    return scores[~torch.isnan(scores)].mean()


# ------------------------------------------------------------------------- accumulators
class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; the base of the pixel-count metrics."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = integer_at_least("num_classes", num_classes)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        matrix = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confusion += matrix.cpu()

    def compute(self) -> torch.Tensor:
        return self.confusion.clone()

    def sync(self) -> None:
        """Sum the counts of every torchrun process (a no-op in a single process)."""
        self.confusion = distributed.all_reduce_sum(self.confusion)


class PixelAccuracy(ConfusionMatrix):
    """Global pixel accuracy over every labelled pixel fed to `update`."""

    def compute(self) -> torch.Tensor:
        return _accuracy_from_confusion(self.confusion)


class ClassAccuracy(ConfusionMatrix):
    """Per-class accuracy averaged over classes present in the targets."""

    def compute(self) -> torch.Tensor:
        return _class_accuracy_from_confusion(self.confusion)


class MeanIoU(ConfusionMatrix):
    """Mean IoU over classes; `per_class()` gives the (num_classes,) vector."""

    def per_class(self) -> torch.Tensor:
        return _iou_from_confusion(self.confusion)

    def compute(self) -> torch.Tensor:
        return self.per_class().nanmean()


class ForegroundIoU(ImageMean):
    """The paper's CUB IoU: per-image foreground IoU, averaged over images.

    Images with no labelled pixel are skipped (``skipped``); ``num_classes``, when given,
    range-checks the labels (`per_image_foreground_iou`).
    """

    def __init__(
        self,
        background: int = 0,
        ignore_index: int | None = None,
        *,
        num_classes: int | None = None,
    ) -> None:
        self.background = background
        self.ignore_index = ignore_index
        self.num_classes = (
            None if num_classes is None else integer_at_least("num_classes", num_classes)
        )
        super().__init__()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.add(
            per_image_foreground_iou(
                pred, target, self.background, self.ignore_index, num_classes=self.num_classes
            )
        )
