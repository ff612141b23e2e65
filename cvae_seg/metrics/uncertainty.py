"""Uncertainty NCC: does the model's pixel-wise uncertainty sit where the annotators differ?

The S_NCC of Baumgartner et al. 2019 (PHiSeg), as their evaluation computes it. For one
image with sample probabilities s_1..s_S (softmax maps, (C, H, W) each), their mean
s_bar = (1/S) sum_i s_i, and annotations y_1..y_A (one-hot):

- the model's uncertainty map: gamma = E_s[CE(s_bar, s)], per pixel
  -(1/S) sum_i sum_c s_bar_c log(s_i,c + eps), the expected cross-entropy between the mean
  prediction and the samples;
- each annotator's error map: e_j = E_s[CE(y_j, s)], per pixel -(1/S) sum_i log(s_i,y_j +
  eps), how badly the samples explain annotator j;
- S_NCC = (1/A) sum_j NCC(gamma, e_j), with NCC(a, b) = mean((a - mean a)(b - mean b)) /
  (std a * std b) over the pixels of the image (population std): Pearson's correlation.

So the annotators' disagreement enters through the samples: a pixel where the annotators
differ is one where some e_j is large, and a good model is uncertain (large gamma) there.

Conventions, stated once:
- eps = 1e-8 inside the logarithm, as PHiSeg's code; hard (one-hot) samples are allowed,
  and then a sample that gives an annotator's label probability 0 costs -log(eps) ~ 18.4.
- NCC is undefined (NaN) when either map is constant over the image's pixels; the score of
  an image is the mean over annotators, NaN when any annotator's NCC is. The accumulator
  averages over images and leaves the NaN ones out (counted in ``skipped``).
- ``ignore_index``: a pixel that any annotation marks ``ignore_index`` is left out of both
  maps (their means and standard deviations too); an image with no pixel left scores NaN.
- Samples are probabilities (S, B, C, H, W) (softmax of each sample's logits); the class
  dimension must sum to 1 (within the rounding of their dtype, as in
  `cvae_seg.metrics.calibration`). Annotations are integer label maps (A, B, H, W).
"""

from __future__ import annotations

import torch

import cvae_seg.metrics._checks as checks
from cvae_seg.metrics.base import ImageMean

__all__ = ["UncertaintyNCC", "uncertainty_ncc"]

EPS = 1e-8


def _check(sample_probs: torch.Tensor, annotations: torch.Tensor, ignore_index: int | None):
    if not isinstance(sample_probs, torch.Tensor) or sample_probs.ndim != 5:
        shape = getattr(sample_probs, "shape", None)
        raise ValueError(f"sample_probs must be (S, B, C, H, W) probabilities, got {shape}")
    checks.probabilities("sample_probs", sample_probs, dim=2)
    checks.label_set("annotations", annotations)
    probs_images = (sample_probs.shape[1], *sample_probs.shape[3:])
    if tuple(annotations.shape[1:]) != probs_images:
        raise ValueError(
            f"annotations (A, B, H, W) must match sample_probs (S, B, C, H, W) in B, H, W, "
            f"got {tuple(annotations.shape)} and {tuple(sample_probs.shape)}"
        )
    checks.label_range("annotations", annotations, sample_probs.shape[2], ignore_index)


def _correlation(first: torch.Tensor, second: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the valid pixels: (..., B, P) maps, (B, P) mask -> (..., B).

    NaN where either map is constant; "constant" allows for rounding (a spread below 1e-9
    of the map's magnitude), so a map of one repeated value is never read as varying.
    """
    weight = valid.double()
    count = weight.sum(-1).clamp_min(1)
    centred, spread = [], []
    for values in (first, second):
        mean = (values * weight).sum(-1, keepdim=True) / count[..., None]
        deviation = (values - mean) * weight
        std = (deviation.square().sum(-1) / count).sqrt()
        constant = std <= 1e-9 * mean.squeeze(-1).abs().clamp_min(1.0)
        centred.append(deviation)
        spread.append(std.masked_fill(constant, float("nan")))
    covariance = (centred[0] * centred[1]).sum(-1) / count
    return covariance / (spread[0] * spread[1])


def uncertainty_ncc(
    sample_probs: torch.Tensor, annotations: torch.Tensor, ignore_index: int | None = None
) -> torch.Tensor:
    """PHiSeg's S_NCC per image, (B,) float64, in [-1, 1] (NaN where undefined).

    ``sample_probs`` (S, B, C, H, W): each sample's per-pixel class probabilities;
    ``annotations`` (A, B, H, W): the annotators' label maps. The mean over annotators of
    the correlation between E_s[CE(s_bar, s)] and E_s[CE(y_j, s)]; the module docstring
    states every convention (eps, constant maps, ``ignore_index``).
    """
    _check(sample_probs, annotations, ignore_index)
    probs = sample_probs.double().flatten(3)  # (S, B, C, P)
    log_probs = torch.log(probs + EPS)
    mean_probs = probs.mean(0)  # (B, C, P)
    uncertainty = -(mean_probs[None] * log_probs).sum(2).mean(0)  # (B, P)
    valid = checks.valid_pixels(annotations, ignore_index)
    labels = annotations.flatten(2).long()  # (A, B, P)
    if valid is not None:
        labels = labels.masked_fill(~valid.flatten(1)[None], 0)
    index = labels[:, None, :, None].expand(-1, probs.shape[0], -1, -1, -1)  # (A, S, B, 1, P)
    picked = log_probs[None].expand(labels.shape[0], -1, -1, -1, -1).gather(3, index)
    errors = -picked.squeeze(3).mean(1)  # (A, B, P)
    keep = torch.ones_like(uncertainty, dtype=torch.bool) if valid is None else valid.flatten(1)
    return _correlation(uncertainty[None], errors, keep.to(errors.device)).mean(0)


class UncertaintyNCC(ImageMean):
    """Mean S_NCC over the images where it is defined (`cvae_seg.metrics.uncertainty`).

    ``update(sample_probs (S, B, C, H, W), annotations (A, B, H, W))``.
    """

    def __init__(self, ignore_index: int | None = None) -> None:
        self.ignore_index = ignore_index
        super().__init__()

    def update(self, sample_probs: torch.Tensor, annotations: torch.Tensor) -> None:
        self.add(uncertainty_ncc(sample_probs, annotations, self.ignore_index))
