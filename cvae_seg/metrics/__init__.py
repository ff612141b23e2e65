"""Metrics: segmentation metrics, sample-set metrics, mode metrics and latent summaries.

- `cvae_seg.metrics.segmentation`: pixel accuracy, class accuracy, IoU, foreground IoU on
  label maps (B, H, W), as pure functions and accumulators.
- `cvae_seg.metrics.samples`: sets of sampled label maps (S, B, H, W) against references:
  the pairwise 1 - IoU distance, the generalized energy distance (GED) and sample diversity.
- `cvae_seg.metrics.matching`: the Hungarian-matched IoU (HM-IoU) of samples and annotators.
- `cvae_seg.metrics.uncertainty`: PHiSeg's NCC between the samples' pixel-wise uncertainty
  and where they fail the annotators.
- `cvae_seg.metrics.calibration`: the pixel expected calibration error and its reliability
  diagram.
- `cvae_seg.metrics.modes`: samples against a known finite support of label maps (hit
  counts, total variation, the mass / sharpness decomposition of p(y_k|x)).
- `cvae_seg.metrics.latent`: summaries of the prior p(z|x) over a set of inputs.

Each module's docstring states its conventions (empty maps, ``ignore_index``, averaging,
self-pairs). Every name is importable from ``cvae_seg.metrics``.
"""

from cvae_seg.metrics.base import ImageMean
from cvae_seg.metrics.calibration import (
    ExpectedCalibrationError,
    ReliabilityDiagram,
    expected_calibration_error,
    reliability_diagram,
)
from cvae_seg.metrics.latent import prior_scale_summary
from cvae_seg.metrics.matching import HungarianMatchedIoU, hungarian_matched_iou
from cvae_seg.metrics.modes import (
    ModeDecomposition,
    candidate_log_likelihoods,
    mode_counts,
    total_variation,
    total_variation_floor,
)
from cvae_seg.metrics.samples import (
    GeneralizedEnergyDistance,
    SampleDiversity,
    generalized_energy_distance,
    pairwise_iou_distance,
    sample_diversity,
)
from cvae_seg.metrics.segmentation import (
    ClassAccuracy,
    ConfusionMatrix,
    ForegroundIoU,
    MeanIoU,
    PixelAccuracy,
    class_accuracy,
    confusion_matrix,
    foreground_iou,
    mean_iou,
    per_class_iou,
    per_image_foreground_iou,
    pixel_accuracy,
)
from cvae_seg.metrics.uncertainty import UncertaintyNCC, uncertainty_ncc

__all__ = [
    "ClassAccuracy",
    "ConfusionMatrix",
    "ExpectedCalibrationError",
    "ForegroundIoU",
    "GeneralizedEnergyDistance",
    "HungarianMatchedIoU",
    "ImageMean",
    "MeanIoU",
    "ModeDecomposition",
    "PixelAccuracy",
    "ReliabilityDiagram",
    "SampleDiversity",
    "UncertaintyNCC",
    "candidate_log_likelihoods",
    "class_accuracy",
    "confusion_matrix",
    "expected_calibration_error",
    "foreground_iou",
    "generalized_energy_distance",
    "hungarian_matched_iou",
    "mean_iou",
    "mode_counts",
    "pairwise_iou_distance",
    "per_class_iou",
    "per_image_foreground_iou",
    "pixel_accuracy",
    "prior_scale_summary",
    "reliability_diagram",
    "sample_diversity",
    "total_variation",
    "total_variation_floor",
    "uncertainty_ncc",
]
