"""Evaluation loops: segmentation metrics, conditional log-likelihood, partial observations,
and samples against several annotators (the LIDC-IDRI protocol).

Accuracies and IoUs are reported in percent (as the paper's tables); the negative conditional
log-likelihood in nats per image, with its standard error over images; GED and
Hungarian-matched IoU as fractions (0-1), as the multi-annotator literature reports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cvae_seg import distributed, metrics
from cvae_seg.checks import integer_at_least, integers_at_least
from cvae_seg.models.base import ConditionalGenerativeModel
from cvae_seg.models.segmentation import SegmentationModel

__all__ = [
    "diagram_from_lists",
    "diagram_to_lists",
    "evaluate",
    "evaluate_annotators",
    "evaluate_likelihood",
    "partial_observation",
]


def _batches(loader: Iterable, device: torch.device, progress: str | None, allow_empty: bool):
    """(x, y) of every batch on ``device``. An empty loader is refused unless allowed (a
    torchrun process may hold an empty shard): its metrics would all be NaN, unsaid."""
    count = 0
    for batch in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        batch = _checked_batch(batch)
        yield (
            batch["image"].to(device, non_blocking=True),
            batch["mask"].to(device, non_blocking=True),
        )
        count += 1
    if not count and not allow_empty:
        raise ValueError("the loader gave no batches: nothing to evaluate (an empty split?)")


def _checked_batch(batch: object, labels: tuple[str, ...] = ("mask",)) -> Mapping:
    """The batch, once it is a dict with "image" and one of ``labels``."""
    if not isinstance(batch, Mapping) or "image" not in batch or not set(labels) & set(batch):
        kind = type(batch).__name__ if not isinstance(batch, Mapping) else f"keys {sorted(batch)}"
        raise TypeError(
            f"each batch must be a dict with 'image' (B, C, H, W) and 'mask' (B, H, W), as "
            f"cvae_seg's data sets give them (build_dataset), got {kind}"
        )
    return batch


def _checked(
    model: object, device: torch.device | str, uses: tuple[str, ...] = ("predict", "sample")
) -> torch.device:
    """The device as a torch.device, once the model has what the evaluation ``uses`` (a
    plain smp model has no `sample`; any object that has them will do)."""
    if not all(callable(getattr(model, name, None)) for name in uses):
        raise TypeError(
            f"model is a {type(model).__name__}; expected a cvae_seg model (an smp model "
            "becomes one with cvae_seg.CVAE(smp_model))"
        )
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device ({error})") from None


def _check_class_names(class_names: object, model: ConditionalGenerativeModel) -> None:
    if (
        isinstance(class_names, str)
        or not isinstance(class_names, Sequence)
        or not all(isinstance(name, str) for name in class_names)
    ):
        raise TypeError(f"class_names must be a list of names, one per class, got {class_names!r}")
    expected = getattr(model, "num_classes", len(class_names))
    if len(class_names) != expected:
        raise ValueError(
            f"class_names names {len(class_names)} classes ({list(class_names)}), but the "
            f"model predicts {expected}"
        )


@torch.no_grad()
def evaluate(
    model: SegmentationModel,
    loader: Iterable,
    class_names: Sequence[str],
    device: torch.device,
    prediction: str = "mean",
    likelihood: bool = True,
    num_samples: int = 50,
    chunk_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
    progress: str | None = "eval",
    across_processes: bool = False,
    calibration_samples: int = 0,
) -> dict[str, Any]:
    """Pixel and class accuracy, per-class / mean / foreground IoU (%), and the negative CLL.

    ``calibration_samples`` > 0 adds ``ece``: the top-label expected calibration error
    (15 bins, a fraction) of the mean of that many samples' softmax, the predictive
    distribution of a sampling model (`cvae_seg.metrics.expected_calibration_error`), and
    ``reliability_diagram``: its bins as lists (`diagram_from_lists` turns them back into a
    `cvae_seg.metrics.ReliabilityDiagram`; an empty bin's means are None).
    ``across_processes``: each torchrun process evaluated a shard; pool them all (every
    process gets the same result).
    """
    device = _checked(model, device)
    _check_class_names(class_names, model)
    integer_at_least("calibration_samples", calibration_samples, minimum=0)
    scores = _SegmentationScores(class_names, model.ignore_index)
    calibration = metrics.ExpectedCalibrationError(ignore_index=model.ignore_index)
    negative_ll: list[torch.Tensor] = []
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    for x, y in _batches(loader, device, progress, across_processes):
        with autocast:
            logits = model.predict(x, method=prediction)
            if likelihood:
                ll = model.log_likelihood(x, y, num_samples=num_samples, chunk_size=chunk_size)
                negative_ll.append(-ll.float().cpu())
            if calibration_samples:
                samples = model.sample(x, calibration_samples).float()
                calibration.update(torch.softmax(samples, 2).mean(0), y)
        scores.update(logits.argmax(1), y)
    result = scores.compute(across_processes)
    if calibration_samples:
        if across_processes:
            calibration.sync()
        result["ece"] = float(calibration.compute())
        result["reliability_diagram"] = diagram_to_lists(calibration.diagram())
    if likelihood:
        result.update(_nll_summary(negative_ll, num_samples, across_processes))
    return result


def diagram_to_lists(diagram: metrics.ReliabilityDiagram) -> dict[str, list]:
    """The diagram as JSON-ready lists (NaN, an empty bin's mean, as None): what `evaluate`
    writes as ``reliability_diagram``, and `diagram_from_lists` reads back."""
    return {name: [None if value != value else value for value in tensor.tolist()]
            for name, tensor in diagram._asdict().items()}  # fmt: skip


def diagram_from_lists(lists: dict[str, list]) -> metrics.ReliabilityDiagram:
    """`evaluate`'s ``reliability_diagram`` (or its JSON) as a ReliabilityDiagram again."""
    nan = float("nan")
    tensors = {name: torch.tensor([nan if value is None else value for value in values],
                                  dtype=torch.float64)
               for name, values in lists.items()}  # fmt: skip
    tensors["counts"] = tensors["counts"].long()
    return metrics.ReliabilityDiagram(**tensors)


class _SegmentationScores:
    """The label-map metrics of `evaluate`, accumulated batch by batch over the split."""

    def __init__(self, class_names: Sequence[str], ignore_index: int | None) -> None:
        num_classes = len(class_names)
        self.class_names = list(class_names)
        self.accuracy = metrics.PixelAccuracy(num_classes, ignore_index)
        self.class_accuracy = metrics.ClassAccuracy(num_classes, ignore_index)
        self.iou = metrics.MeanIoU(num_classes, ignore_index)
        self.foreground = metrics.ForegroundIoU(ignore_index=ignore_index, num_classes=num_classes)

    def _accumulators(self) -> tuple:
        return self.accuracy, self.class_accuracy, self.iou, self.foreground

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        for accumulator in self._accumulators():
            accumulator.update(prediction, target)

    def compute(self, across_processes: bool) -> dict[str, float]:
        """Percentages; ``across_processes`` pools the torchrun processes' shards first."""
        if across_processes:
            for accumulator in self._accumulators():
                accumulator.sync()
        result = {
            "pixel_accuracy": 100 * float(self.accuracy.compute()),
            "class_accuracy": 100 * float(self.class_accuracy.compute()),
            "mean_iou": 100 * float(self.iou.compute()),
            "foreground_iou": 100 * float(self.foreground.compute()),
        }
        per_class = self.iou.per_class().tolist()
        for name, value in zip(self.class_names, per_class, strict=True):
            result[f"iou_{name}"] = 100 * value
        return result


def _nll_summary(
    values: list[torch.Tensor], num_samples: int, across_processes: bool = False
) -> dict[str, float]:
    """Mean negative log-likelihood over examples, its standard error, and S."""
    return {**_mean_and_stderr("nll", values, across_processes), "nll_samples": num_samples}


@torch.no_grad()
def evaluate_likelihood(
    model: ConditionalGenerativeModel,
    loader: Iterable,
    device: torch.device,
    num_samples: int = 100,
    method: str = "auto",
    chunk_size: int = 16,
    progress: str | None = "likelihood",
    across_processes: bool = False,
) -> dict[str, float]:
    """Negative conditional log-likelihood (nats per example) with its standard error.

    The whole evaluation of the MNIST quadrant models (Table 1); ``method`` as in
    `log_likelihood`.
    """
    device = _checked(model, device, uses=("log_likelihood",))
    values = [
        -model.log_likelihood(x, y, num_samples, method, chunk_size).cpu()
        for x, y in _batches(loader, device, progress, across_processes)
    ]
    return _nll_summary(values, num_samples, across_processes)


@torch.no_grad()
def partial_observation(
    model: SegmentationModel,
    loader: Iterable,
    device: torch.device,
    fill: Sequence[float],
    block_sizes: Sequence[int] = (1, 4, 8),
    drop_probs: Sequence[float] = (0.25, 0.5, 0.7),
    num_iterations: int = 5,
    latent: str = "mean",
    seed: int = 0,
    progress: str | None = "partial",
) -> list[dict[str, float]]:
    """Table 4: label the pixels of dropped grid blocks, given the labels of the others.

    ``fill`` is the per-channel value of a dropped pixel in the model's input space (black
    after normalisation). For each (block size, drop probability), pixel accuracy (%) on the
    dropped pixels of the plain prediction and, for models with a recognition net, of the
    iterative inference (`CVAE.complete`). Masks are seeded, so every model sees the same.
    ``num_iterations`` < 1 is refused: the "iterative" column would be the plain one.
    """
    # here, not at the top: cvae_seg.transforms imports albumentations, whose import checks
    # for updates online; evaluating a model should not need it (cvae_seg/data/common.py)
    from cvae_seg.transforms import grid_block_mask

    device = _checked(model, device)
    integer_at_least("num_iterations", num_iterations)
    _check_grid(block_sizes, drop_probs)
    fill_tensor = _fill_tensor(fill, getattr(model, "in_channels", None), device)
    with_recognition = model.recognition_net is not None
    rows = []
    for block in block_sizes:
        for drop in drop_probs:
            rng = np.random.default_rng([seed, block, round(drop * 1000)])
            correct = {"plain": 0, "iterative": 0}
            total = 0
            desc = None if progress is None else f"{progress} b={block} p={drop}"
            for x, y in _batches(loader, device, desc, allow_empty=False):
                masks = [grid_block_mask(*x.shape[-2:], block, drop, rng) for _ in range(len(x))]
                dropped = torch.from_numpy(np.stack(masks)).to(device)
                occluded = torch.where(dropped.unsqueeze(1), fill_tensor, x)
                scored = (
                    dropped if model.ignore_index is None else dropped & (y != model.ignore_index)
                )
                total += int(scored.sum())
                plain = model.predict(occluded).argmax(1)
                correct["plain"] += int(((plain == y) & scored).sum())
                if with_recognition:
                    completed = model.complete(occluded, y, ~dropped, num_iterations, latent)
                    correct["iterative"] += int(((completed.argmax(1) == y) & scored).sum())
            row = {"block_size": block, "drop_prob": drop}
            for name in ("plain", "iterative") if with_recognition else ("plain",):
                row[name] = 100 * correct[name] / total if total else float("nan")
            rows.append(row)
    return rows


def _check_grid(block_sizes: object, drop_probs: object) -> None:
    """Table 4's grid: block sides in pixels and drop probabilities (fractions, not %)."""
    integers_at_least("block_sizes", block_sizes)  # block sides in pixels
    probs = drop_probs if isinstance(drop_probs, Sequence) else None
    if not probs or not all(isinstance(p, int | float) and 0 < p <= 1 for p in probs):
        raise ValueError(
            f"drop_probs must be a list of probabilities in (0, 1] (0.25, not 25), got "
            f"{drop_probs!r}"
        )


def _fill_tensor(fill: object, channels: int | None, device: torch.device) -> torch.Tensor:
    """``fill`` as a (1, C, 1, 1) tensor: one finite value per input channel, or one for all."""
    try:
        tensor = torch.as_tensor(fill, dtype=torch.float32, device=device).flatten()
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if (
        tensor is None
        or not len(tensor)
        or not bool(torch.isfinite(tensor).all())
        or (channels and len(tensor) not in (1, channels))
    ):
        raise ValueError(
            f"fill must be one finite value per input channel ({channels or 'C'}) in the model's "
            f"input space, or one for all, got {fill!r}"
        )
    return tensor.view(1, -1, 1, 1)


def _sample_labels(
    model: ConditionalGenerativeModel,
    x: torch.Tensor,
    num_samples: int,
    chunk_size: int | None,
    probs_kept: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S, B, H, W) label maps, the argmax of S samples drawn ``chunk_size`` at a time, and
    the softmax of the first ``probs_kept`` of them, (probs_kept, B, C, H, W) (None if 0)."""
    chunk = num_samples if chunk_size is None else chunk_size
    maps, probs = [], []
    for start in range(0, num_samples, chunk):
        logits = model.sample(x, min(chunk, num_samples - start))
        maps.append(logits.argmax(2))
        if start < probs_kept:
            probs.append(torch.softmax(logits[: probs_kept - start].float(), 2))
    return torch.cat(maps), torch.cat(probs) if probs else None


def _annotations(batch: dict, device: torch.device) -> torch.Tensor:
    """The batch's annotations as (A, B, H, W): "masks" (B, A, H, W), else "mask" as A = 1."""
    masks = batch["masks"] if "masks" in batch else batch["mask"].unsqueeze(1)
    return masks.to(device, non_blocking=True).transpose(0, 1)


def _mean_and_stderr(
    name: str, values: list[torch.Tensor], across_processes: bool, skip_nan: bool = False
) -> dict[str, float]:
    """Mean over images and its standard error. ``skip_nan`` leaves out the images a metric
    scores NaN (no valid pixel); a NaN likelihood is a fault and must show, so it is kept."""
    pooled = torch.cat(values or [torch.empty(0)]).double().cpu()
    if across_processes:
        pooled = distributed.all_gather_cat(pooled)
    if skip_nan:
        pooled = pooled[~pooled.isnan()]
    stderr = float(pooled.std() / math.sqrt(len(pooled))) if len(pooled) > 1 else 0.0
    mean = float(pooled.mean()) if len(pooled) else float("nan")
    return {name: mean, f"{name}_stderr": stderr}


@torch.no_grad()
def evaluate_annotators(
    model: ConditionalGenerativeModel,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    sample_counts: Sequence[int] = (16, 100),
    background: int | None = 0,
    ignore_index: int | None = None,
    chunk_size: int | None = None,
    progress: str | None = "annotators",
    across_processes: bool = False,
    ncc_samples: int = 16,
) -> dict[str, float]:
    """The LIDC-IDRI protocol: S samples of the model against all A annotations of each image.

    For each S in ``sample_counts`` (the field reports 16 and 100): ``ged_{S}``, the mean over
    images of the generalized energy distance D^2 between the first S samples and the A
    annotations (uniform weights; `cvae_seg.metrics.generalized_energy_distance` states the
    conventions), and ``hm_iou_{S}``, the Hungarian-matched IoU
    (`cvae_seg.metrics.hungarian_matched_iou`), each with its standard error over images.
    One set of max(S) samples is drawn per image and its first S used, so the counts are
    scored on nested sets. ``ncc``: PHiSeg's S_NCC (`cvae_seg.metrics.uncertainty_ncc`) of
    the first ``ncc_samples`` samples' softmax (0: none), the mean over images where it is
    defined, with its standard error. Batches need "masks" (B, A, H, W), as an evaluation dataset of
    multi-annotator data gives them (a batch with only "mask" counts as A = 1).
    ``ignore_index`` defaults to the model's; ``chunk_size`` bounds the samples decoded at
    once (default: all in one batch).
    """
    device = _checked(model, device, uses=("sample",))
    counts = sorted(set(integers_at_least("sample_counts", sample_counts)))  # the field: 16, 100
    ncc_samples = integer_at_least("ncc_samples", ncc_samples, minimum=0)
    if chunk_size is not None:
        integer_at_least("chunk_size", chunk_size)
    if ignore_index is None:
        ignore_index = getattr(model, "ignore_index", None)
    scored: dict[str, list[torch.Tensor]] = {}
    options = dict(num_classes=num_classes, background=background, ignore_index=ignore_index)
    for batch in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        batch = _checked_batch(batch, ("mask", "masks"))
        x = batch["image"].to(device, non_blocking=True)
        references = _annotations(batch, device)
        drawn = max(counts[-1], ncc_samples)
        samples, probs = _sample_labels(model, x, drawn, chunk_size, ncc_samples)
        if probs is not None:
            ncc = metrics.uncertainty_ncc(probs, references, ignore_index)
            scored.setdefault("ncc", []).append(ncc)
        for count in counts:
            ged = metrics.generalized_energy_distance(samples[:count], references, **options)
            scored.setdefault(f"ged_{count}", []).append(ged)
            matched = metrics.hungarian_matched_iou(samples[:count], references, **options)
            scored.setdefault(f"hm_iou_{count}", []).append(matched)
    if not scored and not across_processes:
        raise ValueError("the loader gave no batches: nothing to evaluate (an empty split?)")
    result: dict[str, float] = {"annotators": float(references.shape[0]) if scored else 0.0}
    for name, values in scored.items():
        result.update(_mean_and_stderr(name, values, across_processes, skip_nan=True))
    return result
