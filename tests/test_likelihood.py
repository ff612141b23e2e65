"""Likelihood estimators against exact values computed by brute-force quadrature."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from cvae_seg import CVAE
from cvae_seg.likelihood import importance_log_weights, log_mean_exp, monte_carlo_log_weights
from cvae_seg.modules.latent import GaussianMixture, latent_log_density

# A 1-D latent and five binary pixels with p(y_i = 1 | z) = sigmoid(a_i z + b_i).
A = torch.tensor([1.5, -2.0, 0.7, 2.5, -1.0], dtype=torch.float64)
B = torch.tensor([0.2, 0.5, -0.3, -1.0, 0.8], dtype=torch.float64)
Y = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
PRIOR = Normal(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))


def _log_likelihood_given_z(z: torch.Tensor) -> torch.Tensor:
    """(n, 1, 1) latents -> (n, 1) log p(y | z)."""
    logits = z * A + B  # (n, 1, 5)
    log_p = -nn.functional.binary_cross_entropy_with_logits(
        logits, Y.expand_as(logits), reduction="none"
    )
    return log_p.sum(-1)


def _quadrature(log_likelihood_given_z, prior, half_width=10.0, points=20001):
    """log ∫ p(y|z) p(z) dz on a fine grid around the prior, for a scalar latent.

    ``prior`` is a Normal or a GaussianMixture; the grid spans every component."""
    if isinstance(prior, GaussianMixture):
        means, stds, shape = prior.components.loc, prior.components.scale, (1, 1, 1, 1)
    else:
        means, stds, shape = prior.mean, prior.stddev, tuple(prior.mean.shape)
    low = float((means - half_width * stds).min())
    high = float((means + half_width * stds).max())
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    z = grid.view(-1, *shape)
    log_integrand = log_likelihood_given_z(z.to(means.dtype)).double().squeeze(-1)
    log_integrand = log_integrand + latent_log_density(prior, z).double().view(-1)
    step = grid[1] - grid[0]
    return torch.logsumexp(log_integrand, 0) + torch.log(step)


EXACT = float(_quadrature(_log_likelihood_given_z, PRIOR))


def _standard_error(log_weights: torch.Tensor) -> float:
    """Delta-method standard error of log(mean(exp(w)))."""
    weights = (log_weights - log_weights.max()).exp()
    return float(weights.std() / (weights.mean() * math.sqrt(weights.numel())))


def test_quadrature_is_a_probability():
    # summing p(y) over all 32 binary outputs must give 1: the reference itself is right
    global Y
    saved, total = Y, 0.0
    try:
        for code in range(32):
            Y = torch.tensor([(code >> i) & 1 for i in range(5)], dtype=torch.float64)
            total += math.exp(_quadrature(_log_likelihood_given_z, PRIOR))
    finally:
        Y = saved
    assert total == pytest.approx(1.0, abs=1e-6)


def test_monte_carlo_matches_the_exact_value():
    torch.manual_seed(0)
    weights = monte_carlo_log_weights(_log_likelihood_given_z, PRIOR, 20000, chunk_size=4096)
    assert weights.shape == (20000, 1)
    estimate = float(log_mean_exp(weights))
    assert abs(estimate - EXACT) < 4 * _standard_error(weights)


def test_importance_sampling_rises_towards_the_exact_value():
    torch.manual_seed(0)
    proposal = Normal(
        torch.full((1, 1), 0.6, dtype=torch.float64), torch.full((1, 1), 0.8, dtype=torch.float64)
    )
    means = []
    for samples in (1, 10, 100, 1000):
        estimates = [
            float(
                log_mean_exp(
                    importance_log_weights(_log_likelihood_given_z, proposal, PRIOR, samples, 256)
                )
            )
            for _ in range(200)
        ]
        means.append(sum(estimates) / len(estimates))
    assert means == sorted(means), f"expected a rising estimate, got {means}"
    assert means[-1] <= EXACT + 1e-3
    assert means[-1] == pytest.approx(EXACT, abs=0.01)


def test_chunking_does_not_change_the_estimate():
    torch.manual_seed(5)
    whole = monte_carlo_log_weights(_log_likelihood_given_z, PRIOR, 50, chunk_size=50)
    torch.manual_seed(5)
    chunked = monte_carlo_log_weights(_log_likelihood_given_z, PRIOR, 50, chunk_size=7)
    assert chunked.shape == whole.shape
    with pytest.raises(ValueError, match="num_samples"):
        monte_carlo_log_weights(_log_likelihood_given_z, PRIOR, 0)


class _TinyBackbone(nn.Module):
    """An smp-shaped model on 4x4 images: a decoder conv and a segmentation head."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.segmentation_head(self.decoder(x))


@pytest.mark.parametrize("components", [1, 3])
@pytest.mark.parametrize("method", ["monte_carlo", "importance"])
def test_model_log_likelihood_matches_quadrature_over_its_latent(method, components):
    """With a 1x1 scalar latent, log p(y|x) of the whole model is a 1-D integral (also
    under a mixture prior, whose density and sampler the estimators then use)."""
    torch.manual_seed(0)
    model = CVAE(
        _TinyBackbone(),
        objective="cvae",
        latent_channels=1,
        latent_stride=4,
        gaussian_widths=(8,),
        gaussian_kernel_sizes=(3,),
        scale_weights=(0, 0, 1),
        prior_components=components,
        probe_size=4,
    ).double()
    with torch.no_grad():  # make the latent matter: log p(y|x,z) then varies by nats over z
        model.generation_net.latent.weight.mul_(20)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (1, 4, 4))
    with torch.no_grad():
        encoded = model.encode(x)

    @torch.no_grad()
    def log_likelihood_given_z(z):
        logits = model.decode(encoded, z.view(-1, 1, 1, 1, 1))
        nll = nn.functional.cross_entropy(
            logits.flatten(0, 1), y.expand(z.shape[0], 4, 4), reduction="none"
        )
        return -nll.flatten(1).sum(1).view(-1, 1)

    exact = float(_quadrature(log_likelihood_given_z, encoded.prior))
    torch.manual_seed(1)
    weights = model.log_likelihood_weights(x, y, num_samples=4000, method=method, chunk_size=1000)
    estimate = float(log_mean_exp(weights))
    assert abs(estimate - exact) < 4 * _standard_error(weights) + 1e-6
