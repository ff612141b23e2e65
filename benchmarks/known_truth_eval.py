"""The known-truth benchmark's evaluation of one trained model (benchmarks/known_truth.py).

Everything is scored on one split: the validation split while recipes are chosen, the test
split once (``--split test``). Per image: the NLL by the model's declared estimator
(`declared_estimator`) and, for models with a recognition net, Monte Carlo as a secondary
column; the true NLL; the visible accuracy of ``predict``. On the first ``mode_inputs``
inputs: hit counts, TV beside the perfect sampler's (`cvae_seg.metrics.total_variation_floor`)
and GED against the exact distribution. On every image: the ECE of the mean of
``calibration_samples`` samples' softmax (every pixel, and the occluded pixels alone); with
A > 1 annotators (``data.known_truth_annotators``) also GED and HM-IoU with 16 and 100
samples against them (`cvae_seg.evaluation.evaluate_annotators`) and PHiSeg's NCC. With held-out
layouts (``data.known_truth_holdout``) on the test split, the same numbers again for the
images whose layout training never saw (``held_out``) and for the others (``seen``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cvae_seg import metrics
from cvae_seg.config import Config
from cvae_seg.data.common import build_transform
from cvae_seg.data.known_truth import (
    TEST_SPLITS,
    KnownTruthSet,
    known_truth_split,
    true_log_likelihood,
)
from cvae_seg.evaluation import diagram_to_lists, evaluate_annotators

__all__ = ["declared_estimator", "estimators", "evaluate_run", "evaluation_set"]

_HIDDEN = 255  # the label that marks the pixels left out of an accuracy or ECE
_BATCH = 50  # images per forward pass


def evaluation_set(config: Config, split: str) -> tuple[KnownTruthSet, torch.Tensor, torch.Tensor]:
    """The split ("val" or "test") as `cvae_seg.data` seeds it, normalised: truth, x, y.

    Annotators and held-out layouts as the config's ``data.known_truth_annotators`` and
    ``data.known_truth_holdout`` say (the training run used the same).
    """
    data = config.data
    truth = known_truth_split(
        split, data.shapes_val, data.size, data.known_truth_modes, data.split_seed,
        data.known_truth_annotators, data.known_truth_holdout,
    )  # fmt: skip
    transform = build_transform(False, False, 0.0, data.mean, data.std)
    x = torch.stack([transform(image=i)["image"] for i in truth.arrays.images])
    return truth, x, torch.from_numpy(truth.arrays.labels).long()


def declared_estimator(model) -> str:
    """The headline NLL's estimator, fixed before any number is seen: "importance" for a
    model with a recognition net, "monte_carlo" for other stochastic ones, "exact" for
    deterministic ones (and the ensemble, whose mixture is summed)."""
    return model.likelihood_method


def estimators(model) -> tuple[str, ...]:
    """The declared estimator, then Monte Carlo as a secondary column where it differs."""
    declared = declared_estimator(model)
    return (declared, "monte_carlo") if declared == "importance" else (declared,)


def _batched(function: Callable, *tensors: torch.Tensor, size: int = _BATCH) -> torch.Tensor:
    return torch.cat(
        [function(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)]
    )


def _per_image_nll(model, x: torch.Tensor, y: torch.Tensor, budget: dict) -> dict:
    """{method: (N,) float64 -log p(y|x)} for each of the model's estimators, nats."""
    result = {}
    for method in estimators(model):
        samples = {"exact": 1, "importance": budget["is"], "monte_carlo": budget["mc"]}[method]
        ll = _batched(
            lambda a, b, m=method, s=samples: model.log_likelihood(
                a, b, s, method="auto" if m == "exact" else m, chunk_size=min(s, 100)
            ),
            x,
            y,
        )
        result[method] = -ll.double().cpu().numpy()
    return result


class _SampleStats:
    """Hit counts and GED of one input's samples, drawn once and kept for every subset."""

    def __init__(self, model, x: torch.Tensor, truth: KnownTruthSet, budget: dict,
                 hit_distance: float) -> None:  # fmt: skip
        self.model, self.x, self.truth, self.budget = model, x, truth, budget
        self.hit_distance = hit_distance
        self.cache: dict[int, tuple[np.ndarray, float]] = {}

    def _input(self, i: int) -> tuple[np.ndarray, float]:
        if i not in self.cache:
            samples = self.model.sample(self.x[i : i + 1], self.budget["mode_samples"])
            samples = samples[:, 0].argmax(1)
            candidates = torch.from_numpy(self.truth.candidates[i]).long().to(samples.device)
            hits = metrics.mode_counts(samples, candidates, self.hit_distance).cpu().numpy()
            ged = metrics.generalized_energy_distance(
                samples[: self.budget["ged_samples"], None], candidates[:, None], num_classes=2,
                reference_weights=torch.from_numpy(self.truth.probs),
            )  # fmt: skip
            self.cache[i] = hits, float(ged)
        return self.cache[i]

    def summary(self, indices: np.ndarray) -> dict:
        """TV per input (mean) and pooled, each beside its floor, frequencies and GED."""
        chosen = [int(i) for i in indices[: self.budget["mode_inputs"]]]
        rows = [self._input(i) for i in chosen]
        counts = np.sum([hits for hits, _ in rows], axis=0)
        probs, samples = self.truth.probs, self.budget["mode_samples"]
        return {
            "mode_inputs": len(chosen),
            "tv_mean": float(np.mean([metrics.total_variation(h, probs) for h, _ in rows])),
            "tv_floor_mean": metrics.total_variation_floor(probs, samples),
            "tv_pooled": metrics.total_variation(counts, probs),
            "tv_floor_pooled": metrics.total_variation_floor(probs, samples * len(chosen)),
            "frequencies": (counts / counts.sum()).tolist(),
            "ged": float(np.mean([ged for _, ged in rows])),
        }


def _calibration(model, x: torch.Tensor, y: torch.Tensor, truth: KnownTruthSet,
                 indices: np.ndarray, num_samples: int) -> dict:  # fmt: skip
    """ECE of the samples' mean softmax (every pixel; occluded pixels), the occluded pixels'
    reliability diagram (``reliability_occluded``; the visible pixels, nearly all certain and
    right, would fill the top bin of a diagram of every pixel) and, with A > 1 annotators,
    the uncertainty NCC against them."""
    every, occluded = (
        metrics.ExpectedCalibrationError(),
        metrics.ExpectedCalibrationError(ignore_index=_HIDDEN),
    )
    annotations = truth.arrays.annotations
    ncc = metrics.UncertaintyNCC() if annotations is not None else None
    hidden = torch.from_numpy(truth.hidden).to(y.device)
    for start in range(0, len(indices), _BATCH):
        batch = torch.from_numpy(indices[start : start + _BATCH]).to(x.device)
        probs = model.sample(x[batch], num_samples).float().softmax(2)  # (S, B, C, H, W)
        every.update(probs.mean(0), y[batch])
        occluded.update(probs.mean(0), y[batch].masked_fill(~hidden[batch], _HIDDEN))
        if ncc is not None:
            references = torch.from_numpy(annotations[batch.cpu().numpy()]).long()
            ncc.update(probs, references.transpose(0, 1).to(probs.device))
    result = {
        "ece": float(every.compute()),
        "ece_occluded": float(occluded.compute()),
        "reliability_occluded": diagram_to_lists(occluded.diagram()),
    }
    if ncc is not None:
        result["ncc"] = float(ncc.compute())
    return result


def _annotator_metrics(model, x: torch.Tensor, truth: KnownTruthSet, indices: np.ndarray,
                       budget: dict, device: torch.device) -> dict:  # fmt: skip
    """GED and HM-IoU of S samples against the A annotations (the LIDC-IDRI protocol)."""
    annotations = torch.from_numpy(truth.arrays.annotations).long()
    loader = [
        {"image": x[torch.from_numpy(chunk).to(x.device)], "masks": annotations[chunk]}
        for chunk in np.array_split(indices, max(1, -(-len(indices) // _BATCH)))
        if len(chunk)
    ]
    scored = evaluate_annotators(
        model, loader, 2, device, sample_counts=budget["annotator_samples"], progress=None
    )
    return {key: value for key, value in scored.items() if key != "annotators"}


def _visible_counts(model, x: torch.Tensor, y: torch.Tensor, hidden: np.ndarray) -> np.ndarray:
    """(N, 2): correct and scored visible pixels of ``predict`` per image."""
    prediction = _batched(lambda a: model.predict(a).argmax(1), x)
    visible = ~torch.from_numpy(hidden).to(y.device)
    correct = ((prediction == y) & visible).flatten(1).sum(1)
    return torch.stack([correct, visible.flatten(1).sum(1)], 1).cpu().numpy()


@torch.no_grad()
def evaluate_run(model, config: Config, budget: dict, device: torch.device,
                 split: str = "val", hit_distance: float = 2) -> dict:  # fmt: skip
    """Every number of the report for one trained model on ``split``."""
    truth, x, y = evaluation_set(config, split)
    x, y = x.to(device), y.to(device)
    declared = declared_estimator(model)
    nll = _per_image_nll(model, x, y, budget)
    true_nll = -true_log_likelihood(truth.arrays.labels, truth.candidates, truth.probs)
    visible = _visible_counts(model, x, y, truth.hidden)
    samples = _SampleStats(model, x, truth, budget, hit_distance)

    def subset(indices: np.ndarray) -> dict:
        result = {"images": len(indices), "true_nll": float(true_nll[indices].mean())}
        result.update({f"nll_{m}": float(v[indices].mean()) for m, v in nll.items()})
        result["nll"] = result[f"nll_{declared}"]
        result["nll_ratio"] = result["nll"] / result["true_nll"]
        correct, scored = visible[indices].sum(0)
        result["visible_accuracy"] = 100 * float(correct / scored)
        result.update(samples.summary(indices))
        result.update(_calibration(model, x, y, truth, indices, budget["calibration_samples"]))
        if truth.arrays.annotations is not None:
            result.update(_annotator_metrics(model, x, truth, indices, budget, device))
        return result

    result = {"entropy": truth.entropy, "nll_estimator": declared, **subset(np.arange(len(x)))}
    if split in TEST_SPLITS and truth.held_out is not None and truth.held_out.any():
        result["held_out"] = subset(np.flatnonzero(truth.held_out))
        result["seen"] = subset(np.flatnonzero(~truth.held_out))
    result.update(_elbo_terms(model, x, y))
    return result


def _elbo_terms(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """KL(q||p), -log p(y|x,z) with z ~ q (nats per image) and the KL's share of the
    negative ELBO on the pairs, for models with a recognition net (else empty)."""
    if model.recognition_net is None:
        return {}
    model.eval()
    pixels = y[0].numel()
    rows = []
    for start in range(0, len(x), _BATCH):
        terms = model.loss(x[start : start + _BATCH], y[start : start + _BATCH]).terms
        if "kl" not in terms or "nll_posterior" not in terms:
            return {}
        batch = len(x[start : start + _BATCH])
        row = torch.stack([terms["kl"], terms["nll_posterior"] * pixels])
        rows.append(row[None].expand(batch, 2))
    kl, reconstruction = torch.cat(rows).mean(0).tolist()
    return {"kl": kl, "reconstruction": reconstruction, "kl_share": kl / (kl + reconstruction)}
