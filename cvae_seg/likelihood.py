"""Conditional log-likelihood estimators, log p(y|x) = log E_{p(z|x)} p(y|x,z).

Both estimators draw latents in chunks and keep only one (S, B) matrix of log-weights, so S
can be in the thousands without holding S decoded outputs at once; the average is taken in
log space with ``torch.logsumexp``.

- Monte Carlo: z_s ~ p(z|x), weight log p(y|x,z_s). Unbiased in p, needs many samples.
- Importance sampling: z_s ~ q(z|x,y), weight log p(y|x,z_s) + log p(z_s|x) - log q(z_s|x,y).
  Much tighter for the same S when q is close to the posterior.

Both are lower bounds in expectation (Jensen) that rise towards log p(y|x) as S grows;
`block_estimates` shows how far a given S is from the limit. Log-likelihoods are in nats, per
example (summed over the scored pixels), negative log-likelihoods their negation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cvae_seg.checks import integer_at_least
from cvae_seg.modules.latent import LatentDistribution, latent_log_density

__all__ = [
    "LogLikelihoodGivenZ",
    "block_estimates",
    "importance_log_weights",
    "latent_log_ratio",
    "log_mean_exp",
    "masked_nll",
    "monte_carlo_log_weights",
]

# (n, B, *latent_shape) latents -> (n, B) values of log p(y|x,z) per sample and example.
LogLikelihoodGivenZ = Callable[[torch.Tensor], torch.Tensor]


def log_mean_exp(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log of the mean of exp(log_weights) along ``dim``, computed stably."""
    return torch.logsumexp(log_weights, dim=dim) - math.log(log_weights.shape[dim])


def latent_log_ratio(
    prior: LatentDistribution, proposal: LatentDistribution, z: torch.Tensor
) -> torch.Tensor:
    """log p(z|x) - log q(z|x,y) per sample and example, (n, B), in float32 (AMP-safe)."""
    return latent_log_density(prior, z) - latent_log_density(proposal, z)


def _chunks(total: int, chunk_size: int) -> list[int]:
    total = integer_at_least("num_samples", total)
    chunk_size = integer_at_least("chunk_size", chunk_size)
    return [min(chunk_size, total - start) for start in range(0, total, chunk_size)]


def monte_carlo_log_weights(
    log_likelihood_given_z: LogLikelihoodGivenZ,
    prior: LatentDistribution,
    num_samples: int,
    chunk_size: int = 16,
) -> torch.Tensor:
    """(S, B) values log p(y|x,z_s) with z_s ~ prior; ``log_mean_exp`` gives the estimate."""
    weights = [log_likelihood_given_z(prior.sample((n,))) for n in _chunks(num_samples, chunk_size)]
    return torch.cat(weights)


def importance_log_weights(
    log_likelihood_given_z: LogLikelihoodGivenZ,
    proposal: LatentDistribution,
    prior: LatentDistribution,
    num_samples: int,
    chunk_size: int = 16,
) -> torch.Tensor:
    """(S, B) importance log-weights with z_s ~ proposal (the recognition net q(z|x,y))."""
    weights = []
    for n in _chunks(num_samples, chunk_size):
        z = proposal.sample((n,))
        weights.append(log_likelihood_given_z(z) + latent_log_ratio(prior, proposal, z))
    return torch.cat(weights)


def block_estimates(log_weights: torch.Tensor, sizes: list[int]) -> dict[int, dict]:
    """The estimate's dependence on S: (total, B) log-weights cut into disjoint blocks.

    For each block size S in ``sizes``, the first ``(total // S) * S`` log-weights of every
    example are cut into ``total // S`` blocks of S; each block gives an estimate
    -log_mean_exp per example, averaged over the B examples. Returns, per S, ``nll`` (the
    mean over blocks, nats per example), ``block_std`` (the std over blocks; None for one
    block) and ``blocks`` (their number).
    """
    total = log_weights.shape[0]
    result = {}
    for size in sizes:
        if not 1 <= size <= total:
            raise ValueError(f"block sizes must lie in [1, {total}], got {size}")
        blocks = log_weights[: (total // size) * size].reshape(total // size, size, -1)
        nll = -log_mean_exp(blocks, dim=1).mean(1)  # (blocks,)
        spread = float(nll.std()) if len(nll) > 1 else None
        result[size] = {"nll": float(nll.mean()), "block_std": spread, "blocks": len(nll)}
    return result


def masked_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) summed per-pixel cross-entropy -log p(y_i|...) over the pixels where mask is True.

    logits (B, C, H, W), labels (B, H, W) integer, mask (B, H, W) bool: nats per image.
    """
    pixel_nll = torch.nn.functional.cross_entropy(logits.float(), labels.long(), reduction="none")
    return (pixel_nll * mask).flatten(1).sum(1)
