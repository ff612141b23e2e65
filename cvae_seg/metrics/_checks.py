"""Argument checks the metric modules share, kept apart from the computations.

Internal to `cvae_seg.metrics`: each check raises a ``ValueError`` that names the argument
and what was expected, and returns nothing (or the derived mask, for `valid_pixels`). Counts are
checked by `cvae_seg.checks`, shared with the rest of the package.
"""

from __future__ import annotations

import numbers

import torch

from cvae_seg.checks import integer_at_least


def label_set(name: str, maps: torch.Tensor) -> None:
    """``maps`` must be a non-empty set of integer label maps (N, B, H, W)."""
    if not isinstance(maps, torch.Tensor):
        raise ValueError(f"{name} must be a tensor (N, B, H, W), got {type(maps).__name__}")
    if maps.ndim != 4:
        raise ValueError(f"{name} must be (N, B, H, W) label maps, got shape {tuple(maps.shape)}")
    if maps.is_floating_point() or maps.is_complex():
        raise ValueError(f"{name} must hold integer labels (argmax the logits first)")
    if maps.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one map, got N = 0")


def label_range(name: str, maps: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Every label of ``maps`` must lie in [0, num_classes) or be ``ignore_index``."""
    labels = maps if ignore_index is None else maps[maps != ignore_index]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        allowed = "" if ignore_index is None else f" or be ignore_index={ignore_index}"
        raise ValueError(f"{name} labels must lie in [0, {num_classes}){allowed}")


def same_images(
    first_name: str, first: torch.Tensor, second_name: str, second: torch.Tensor
) -> None:
    """Two sets of maps must describe the same (B, H, W) images."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(
            f"{first_name} and {second_name} must share (B, H, W), got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )


def foreground_classes(num_classes: int, background: int | None) -> None:
    """At least one class other than ``background`` must remain to score."""
    num_classes = integer_at_least("num_classes", num_classes)
    if num_classes == 1 and background == 0:
        raise ValueError(f"num_classes={num_classes} with background={background} leaves no class")


def sample_sets(
    samples: torch.Tensor,
    references: torch.Tensor | None,
    num_classes: int,
    background: int | None,
    ignore_index: int | None = None,
    names: tuple[str, str] = ("samples", "references"),
) -> None:
    """Validate a set of sampled label maps and, when given, the references beside them.

    Samples (S, B, H, W) hold labels in [0, num_classes); references (R, B, H, W) the same
    or ``ignore_index``, for the same B images of the same size.
    """
    foreground_classes(num_classes, background)
    label_set(names[0], samples)
    label_range(names[0], samples, num_classes, None)
    if references is not None:
        label_set(names[1], references)
        same_images(names[0], samples, names[1], references)
        label_range(names[1], references, num_classes, ignore_index)


def empty_distance(value: float) -> None:
    """``empty_distance`` is a distance d = 1 - IoU, so it must be a number in [0, 1].

    Outside it GED goes negative and HM-IoU leaves [0, 1] without any error (NaN fails too).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"empty_distance must be a number in [0, 1] (a 1 - IoU), got {value!r}")


def valid_mask(valid: torch.Tensor | None, images: torch.Size) -> None:
    """``valid`` must be None or a (B, H, W) bool mask of the images.

    Bool only: an integer mask would be combined bitwise (a mask of 2s keeps no pixel's
    class) and a float or numpy one fails inside torch.
    """
    if valid is None:
        return
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        kind = valid.dtype if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a bool torch tensor (B, H, W), got {kind}")
    if tuple(valid.shape) != tuple(images):
        raise ValueError(f"valid must be (B, H, W) = {tuple(images)}, got {tuple(valid.shape)}")


def valid_pixels(
    references: torch.Tensor | None,
    ignore_index: int | None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """(B, H, W) bool: the pixels no reference marks ``ignore_index`` (and ``valid`` keeps).

    The one rule of the sample-set metrics: a pixel that any reference (annotator) marks
    ``ignore_index`` counts in no score of that image. None when nothing is left out.
    """
    if ignore_index is None:
        return valid
    if references is None:
        raise ValueError(
            "ignore_index needs the references (R, B, H, W) whose labels it marks; "
            "pass them, or pass valid=(B, H, W) instead"
        )
    keep = (references != ignore_index).all(0)
    return keep if valid is None else keep & valid.bool()


def tolerance(dtype: torch.dtype) -> float:
    """The rounding a probability of ``dtype`` may carry: 1e-3, or 4 eps when that is coarser.

    A bfloat16 softmax sums to 1 only within a few of its eps (7.8e-3), far beyond 1e-3;
    float32 and float64 keep exactly the 1e-3 they always had.
    """
    return max(1e-3, 4 * torch.finfo(dtype).eps)


def probabilities(name: str, probs: torch.Tensor, dim: int, atol: float | None = None) -> None:
    """``probs`` must be finite, floating point, in [0, 1] and sum to 1 along ``dim``.

    ``atol`` defaults to the rounding of ``probs``' dtype (`tolerance`).
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of probabilities (softmax)")
    if probs.numel() == 0:
        return
    if atol is None:
        atol = tolerance(probs.dtype)
    if not bool(torch.isfinite(probs).all()):
        raise ValueError(f"{name} holds non-finite values (NaN or inf); expected probabilities")
    if bool((probs < -atol).any()) or bool((probs > 1 + atol).any()):
        raise ValueError(f"{name} must lie in [0, 1] (probabilities, not logits)")
    total = probs.double().sum(dim)
    if not torch.allclose(total, torch.ones_like(total), atol=atol):
        raise ValueError(f"{name} must sum to 1 over the class dimension {dim} (softmax)")
