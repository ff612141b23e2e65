"""Mode metrics for a task whose true conditional distribution has a known finite support.

For one input, p(y|x) puts probability pi_k on each of K candidate label maps y_k
(`cvae_seg.data.known_truth`). These functions score a model's samples against that support.

Conventions:
- Hits: a sample counts for the candidate nearest in Hamming distance (pixels that differ;
  ties go to the lower index), or for a last "miss" bin when that distance exceeds
  ``max_distance`` pixels. Counts have K + 1 entries, the miss bin last.
- Total variation: 0.5 sum |f - t| between the hit frequencies f and the truth t = (pi, 0)
  (no true mass on the miss bin), in [0, 1]. Its floor: the expected TV of a perfect sampler
  (S independent draws from pi itself) with the same number of samples, which is not 0
  because S is finite (`total_variation_floor`).
- Mode likelihoods: log p(y_k|x, z_s) = sum over pixels of log softmax(logits_s)[y_k], the
  model's per-pixel categorical likelihood of candidate k given sample s's latent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

import cvae_seg.metrics._checks as checks
from cvae_seg.checks import integer_at_least

__all__ = [
    "ModeDecomposition",
    "candidate_log_likelihoods",
    "mode_counts",
    "total_variation",
    "total_variation_floor",
]


def mode_counts(
    samples: torch.Tensor, candidates: torch.Tensor, max_distance: float
) -> torch.Tensor:
    """(K + 1,) int64 hits per candidate and misses: samples (S, H, W), candidates (K, H, W).

    Each sample counts for its nearest candidate (Hamming distance; ties to the lower index),
    or as a miss when that distance exceeds ``max_distance`` pixels.
    """
    if not max_distance >= 0:  # NaN too: no sample would ever count as a hit
        raise ValueError(f"max_distance must be a number of pixels >= 0, got {max_distance!r}")
    if samples.shape[1:] != candidates.shape[1:]:
        raise ValueError(
            f"samples (S, H, W) and candidates (K, H, W) must share (H, W), got "
            f"{tuple(samples.shape)} and {tuple(candidates.shape)}"
        )
    distance = (samples[:, None] != candidates[None]).flatten(2).sum(-1)  # (S, K)
    nearest, best = distance.argmin(1), distance.min(1).values
    nearest[best > max_distance] = candidates.shape[0]
    return torch.bincount(nearest, minlength=candidates.shape[0] + 1)


def total_variation(
    counts: torch.Tensor | np.ndarray | Sequence[float], probs: np.ndarray | Sequence[float]
) -> float:
    """0.5 sum |f - t| between hit frequencies and the truth t = (pi, 0).

    ``counts`` has K + 1 entries (the miss bin last, as `mode_counts` gives) or K (no miss
    bin); ``probs`` the K true probabilities.
    """
    counts = np.asarray(counts, dtype=np.float64)
    truth = _truth(probs)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a vector of non-negative hit counts, got {counts}")
    if len(counts) not in (len(truth), len(truth) + 1):
        raise ValueError(f"counts need K or K + 1 entries for K = {len(truth)}, got {len(counts)}")
    if counts.sum() <= 0:
        raise ValueError("counts must hold at least one sample")
    truth = np.pad(truth, (0, len(counts) - len(truth)))
    return float(0.5 * np.abs(counts / counts.sum() - truth).sum())


def _truth(probs: np.ndarray | Sequence[float]) -> np.ndarray:
    """``probs`` as float64, checked to be a probability vector: a TV against anything else
    is not a distance between distributions (and can exceed 1)."""
    truth = np.asarray(probs, dtype=np.float64)
    if truth.ndim != 1 or (truth < 0).any() or not np.isclose(truth.sum(), 1.0):
        raise ValueError(f"probs must be non-negative and sum to 1, got {probs}")
    return truth


def _binomial_mean_absolute_deviation(num_samples: int, p: float) -> float:
    """E|X - n p| for X ~ Binomial(n, p), exact (de Moivre's closed form).

    E|X - np| = 2 v C(n, v) p^v (1 - p)^(n - v + 1) with v = floor(np) + 1, computed in logs.
    """
    if p <= 0.0 or p >= 1.0:
        return 0.0
    v = math.floor(num_samples * p) + 1
    if v > num_samples:
        return 0.0
    log_term = (
        math.log(2 * v)
        + math.lgamma(num_samples + 1)
        - math.lgamma(v + 1)
        - math.lgamma(num_samples - v + 1)
        + v * math.log(p)
        + (num_samples - v + 1) * math.log1p(-p)
    )
    return math.exp(log_term)


def total_variation_floor(probs: np.ndarray | Sequence[float], num_samples: int) -> float:
    """The expected TV between pi and the frequencies of ``num_samples`` draws from pi.

    What a perfect sampler scores in `total_variation` with the same number of samples:
    E[0.5 sum_k |n_k / S - pi_k|] = 0.5 sum_k E|n_k - S pi_k| / S, each n_k binomial, exact.
    It falls like 1 / sqrt(S) (pi = (0.7, 0.3), S = 1,000: 0.012).
    """
    truth = _truth(probs)
    n = integer_at_least("num_samples", num_samples)
    deviation = sum(_binomial_mean_absolute_deviation(n, float(p)) for p in truth)
    return 0.5 * deviation / n


def candidate_log_likelihoods(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(S, K) log p(y_k|x, z_s) for sampled logits (S, C, H, W) and candidates (K, H, W).

    The shapes and the candidates' labels (in [0, C)) are checked: a smaller candidate map
    would otherwise be scored on a corner of the logits.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor (S, C, H, W), got {shape}")
    if not isinstance(candidates, torch.Tensor) or candidates.ndim != 3:
        shape = (
            tuple(candidates.shape)
            if isinstance(candidates, torch.Tensor)
            else type(candidates).__name__
        )
        raise ValueError(f"candidates must be a tensor (K, H, W), got {shape}")
    if candidates.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"candidates (K, H, W) must match logits (S, C, H, W) in H, W, got "
            f"{tuple(candidates.shape)} and {tuple(logits.shape)}"
        )
    checks.label_range("candidates", candidates, logits.shape[1], None)
    log_probs = torch.log_softmax(logits.float(), 1)
    labels = candidates.long().to(log_probs.device)
    index = labels[None].expand(log_probs.shape[0], -1, -1, -1)  # (S, K, H, W)
    return log_probs.gather(1, index).flatten(2).sum(-1)


def _log_likelihoods(values: torch.Tensor) -> None:
    """Log-likelihoods are <= 0 (-inf allowed): positive ones are probabilities or logits,
    which would report shares above 1. The slack is the rounding of the values' dtype."""
    if bool(torch.isnan(values).any()):
        raise ValueError("log_likelihoods holds NaN; expected log-likelihoods (<= 0)")
    slack = checks.tolerance(values.dtype) if values.is_floating_point() else 0
    if values.numel() and float(values.max()) > slack:
        raise ValueError(
            "log_likelihoods must be log-likelihoods (<= 0, as candidate_log_likelihoods "
            f"gives), got a maximum of {float(values.max())}: probabilities or logits?"
        )


class ModeDecomposition:
    """Splits a model's p(y_k|x) into where its latents fall and how sharp the decoder is.

    Feed ``update`` the (S, K) `candidate_log_likelihoods` of S latents drawn from the prior
    for one input at a time. Region k holds the latents whose decoded map explains candidate
    k best (argmax over k). `compute` pools over inputs and returns, per candidate:
    ``mass`` (the share of latents in region k), ``sharpness`` (the mean p(y_k|x, z) inside
    region k: 1 for a perfectly sharp decoder, NaN when no latent fell there) and
    ``monte_carlo_p`` (the mean over inputs of the Monte Carlo p(y_k|x)); and ``in_between``,
    the share of latents for which no candidate has p(y_k|x, z) > 1/2.
    """

    def __init__(self, num_modes: int) -> None:
        self.num_modes = integer_at_least("num_modes", num_modes)
        self.reset()

    def reset(self) -> None:
        self.hits = np.zeros(self.num_modes)
        self.inside = np.zeros(self.num_modes)
        self.marginal = np.zeros(self.num_modes)
        self.in_between = 0
        self.inputs = 0

    def update(self, log_likelihoods: torch.Tensor) -> None:
        if log_likelihoods.ndim != 2 or log_likelihoods.shape[1] != self.num_modes:
            raise ValueError(f"expected (S, {self.num_modes}), got {tuple(log_likelihoods.shape)}")
        _log_likelihoods(log_likelihoods)
        region = log_likelihoods.argmax(1)
        probs = log_likelihoods.double().exp()
        self.in_between += int((probs.max(1).values < 0.5).sum())
        for k in range(self.num_modes):
            chosen = region == k
            self.hits[k] += float(chosen.sum())
            self.inside[k] += float(probs[chosen, k].sum())
            self.marginal[k] += float(probs[:, k].mean())
        self.inputs += 1

    def compute(self) -> dict[str, list[float] | float]:
        total = self.hits.sum()
        sharpness = np.divide(
            self.inside, self.hits, out=np.full(self.num_modes, np.nan), where=self.hits > 0
        )
        return {
            "mass": (self.hits / total).tolist(),
            "sharpness": sharpness.tolist(),
            "monte_carlo_p": (self.marginal / self.inputs).tolist(),
            "in_between": float(self.in_between / total),
        }
