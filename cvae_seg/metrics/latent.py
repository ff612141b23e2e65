"""How a model uses its latent space: summaries of the prior p(z|x) over a set of inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cvae_seg.modules.latent import GaussianMixture, LatentDistribution

__all__ = ["prior_scale_summary"]


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 3) for v in values]


def prior_scale_summary(priors: Sequence[LatentDistribution]) -> dict[str, list[float]]:
    """The prior's standard deviation per latent channel, and a mixture's weights.

    ``priors``: the prior distributions of consecutive batches of inputs (``model.prior(x)``),
    each a `Normal` over (B, C, ...) latents or a `GaussianMixture` over (B, M, C, ...).
    Returns ``prior_std_per_channel`` (C,): the std averaged over inputs and latent positions
    (for a mixture, the components' stds weighted by the mixture weights); and for a mixture
    ``prior_component_weights`` (M,): the mean weights over inputs, heaviest first. Values
    are rounded to 3 decimals (for reports).
    """
    if isinstance(priors[0], GaussianMixture):
        weights = torch.cat([p.mixture_distribution.probs for p in priors])  # (N, M)
        std = torch.cat([p.components.scale for p in priors])  # (N, M, C, ...)
        std = std.flatten(3).mean(3) if std.ndim > 3 else std  # (N, M, C)
        per_channel = (weights[..., None] * std).sum(1).mean(0)
        return {
            "prior_std_per_channel": _rounded(per_channel),
            "prior_component_weights": _rounded(weights.mean(0).sort(descending=True).values),
        }
    std = torch.cat([p.stddev for p in priors])  # (N, C, ...)
    return {"prior_std_per_channel": _rounded(std.transpose(0, 1).flatten(1).mean(1))}
