"""The latent distributions: the paper's diagonal Gaussian and a Gaussian-mixture prior.

Why a mixture: a unimodal prior must put mass on the borders between the regions of z that
decode to different outputs, and every sample drawn there decodes to a map between shapes
(docs/benchmarks/known_truth.md measures how often). A mixture of M Gaussians can hold M
separated modes, so the borders can lie where the prior has almost no mass. One component is
chosen for the whole latent map: the mixture picks the kind of output, each component's
Gaussian its variations.

torch's `MixtureSameFamily` computes the density but has no `rsample`; `GaussianMixture`
adds one that is reparameterised within the drawn component (the component choice itself
carries no gradient, so a GSNN term cannot train the mixture weights; the KL of the CVAE
and hybrid objectives does, through log p(z|x)).

The helpers treat a `Normal` (one density per latent element) and a `GaussianMixture`
(one density per latent map) alike: (n, B, *latent) latents -> (n, B) log-densities.
"""

from __future__ import annotations

import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

__all__ = [
    "GaussianMixture",
    "LatentDistribution",
    "latent_kl",
    "latent_log_density",
    "latent_point",
]


class GaussianMixture(MixtureSameFamily):
    """p(z|x) = sum_m w_m(x) N(z; mu_m(x), diag sigma_m(x)^2) over whole latent maps.

    ``logits`` (B, M) give the weights; ``mean`` and ``stddev`` (B, M, *latent) the
    components. Event shape: the latent map; batch shape (B,).
    """

    has_rsample = True

    def __init__(self, logits: torch.Tensor, mean: torch.Tensor, stddev: torch.Tensor) -> None:
        if mean.shape != stddev.shape or mean.shape[:2] != logits.shape:
            raise ValueError(
                f"a mixture needs logits (B, M) and mean/stddev (B, M, *latent) of one shape, "
                f"got {tuple(logits.shape)}, {tuple(mean.shape)}, {tuple(stddev.shape)}"
            )
        components = Independent(Normal(mean, stddev), mean.ndim - 2)
        super().__init__(Categorical(logits=logits), components, validate_args=False)

    @property
    def components(self) -> Normal:
        """The components' Gaussians, mean and stddev (B, M, *latent)."""
        return self.component_distribution.base_dist

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """(*sample_shape, B, *latent): a component per draw, then its Gaussian reparameterised."""
        index = self.mixture_distribution.sample(torch.Size(sample_shape))  # (*S, B)
        mean, std = _chosen(self.components.loc, index), _chosen(self.components.scale, index)
        return mean + std * torch.randn_like(mean)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def heaviest_mean(self) -> torch.Tensor:
        """(B, *latent): the mean of each input's most probable component."""
        return _chosen(self.components.loc, self.mixture_distribution.logits.argmax(-1))

    def to_float32(self) -> GaussianMixture:
        """The same mixture in float32 (densities under AMP)."""
        components = self.components
        return GaussianMixture(
            self.mixture_distribution.logits.float(),
            components.loc.float(),
            components.scale.float(),
        )


LatentDistribution = Normal | GaussianMixture


def _chosen(per_component: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """per_component (B, M, *latent), index (*S, B) -> (*S, B, *latent)."""
    latent_dims = per_component.ndim - 2
    expanded = per_component.expand(*index.shape[:-1], *per_component.shape)
    where = index.view(*index.shape, 1, *[1] * latent_dims)
    where = where.expand(*index.shape, 1, *per_component.shape[2:])
    return expanded.gather(index.ndim, where).squeeze(index.ndim)


def latent_point(distribution: LatentDistribution) -> torch.Tensor:
    """The latent that a deterministic prediction decodes, (B, *latent).

    The mean of a Gaussian (the paper's E[z|x]); for a mixture, the mean of its heaviest
    component: the mixture's own mean may lie between modes, where no output was trained.
    """
    if isinstance(distribution, GaussianMixture):
        return distribution.heaviest_mean()
    return distribution.mean


def latent_log_density(distribution: LatentDistribution, z: torch.Tensor) -> torch.Tensor:
    """log p(z) summed over the latent map, in float32 (AMP-safe): (n, B, *latent) -> (n, B)."""
    z = z.float()
    if isinstance(distribution, GaussianMixture):
        return distribution.to_float32().log_prob(z)
    normal = Normal(distribution.mean.float(), distribution.stddev.float())
    return normal.log_prob(z).flatten(2).sum(-1)


def latent_kl(
    posterior: Normal, prior: LatentDistribution, z: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(q || p) in nats per example, (B,), in float32.

    Exact for two Gaussians; for a mixture prior, which has no closed form, the Monte Carlo
    estimate log q(z) - log p(z) averaged over the given posterior samples z (n, B, *latent),
    reparameterised so that it trains both nets (as VampPrior-style VAEs do).
    """
    if isinstance(prior, GaussianMixture):
        if z is None:
            raise ValueError("the KL to a mixture prior needs posterior samples z")
        log_ratio = latent_log_density(posterior, z) - latent_log_density(prior, z)
        return log_ratio.mean(0)
    q32 = Normal(posterior.mean.float(), posterior.stddev.float())
    p32 = Normal(prior.mean.float(), prior.stddev.float())
    return kl_divergence(q32, p32).flatten(1).sum(1)
