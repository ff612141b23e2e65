"""Conditional log-likelihood estimators, log p(y|x) = log E_{p(z|x)} p(y|x,z).

Both estimators draw latents in chunks and keep only one (S, B) matrix of log-weights, so S
can be in the thousands without holding S decoded outputs at once; the average is taken in
log space with ``torch.logsumexp``.

- Monte Carlo: z_s ~ p(z|x), weight log p(y|x,z_s). Unbiased in p, needs many samples.
- Importance sampling: z_s ~ q(z|x,y), weight log p(y|x,z_s) + log p(z_s|x) - log q(z_s|x,y).
  Much tighter for the same S when q is close to the posterior.

Both are lower bounds in expectation (Jensen) that rise towards log p(y|x) as S grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cvae_seg.latent import LatentDistribution, latent_log_density

__all__ = [
    "LogLikelihoodGivenZ",
    "importance_log_weights",
    "latent_log_ratio",
    "log_mean_exp",
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
    if total < 1:
        raise ValueError(f"num_samples must be >= 1, got {total}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
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
