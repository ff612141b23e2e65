"""The mixture prior: its density, sampler and KL against brute force, and in the models."""

import math

import pytest
import torch
from conftest import TEST_ENCODER
from torch.distributions import Normal, kl_divergence

import cvae_seg
from cvae_seg.config import Config
from cvae_seg.modules.latent import GaussianMixture, latent_kl, latent_log_density, latent_point
from cvae_seg.training import build_model


def _mixture(batch=2, components=3, latent=(2, 2, 1)):
    logits = torch.randn(batch, components)
    mean = 3 * torch.randn(batch, components, *latent)
    std = torch.rand(batch, components, *latent) + 0.2
    return GaussianMixture(logits, mean, std)


def test_density_is_the_weighted_sum_over_whole_latent_maps():
    mixture = _mixture()
    z = torch.randn(5, 2, 2, 2, 1)
    weights = mixture.mixture_distribution.probs  # (B, M)
    loc, scale = mixture.components.loc, mixture.components.scale
    brute = torch.zeros(5, 2)
    for m in range(3):
        per_map = Normal(loc[:, m], scale[:, m]).log_prob(z).flatten(2).sum(-1).exp()
        brute += weights[:, m] * per_map
    torch.testing.assert_close(latent_log_density(mixture, z), brute.log())


def test_samples_pick_components_by_weight_and_carry_gradients():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    mean = torch.tensor([-10.0, 0.0, 10.0]).view(1, 3, 1).requires_grad_()
    mixture = GaussianMixture(logits, mean, torch.full((1, 3, 1), 0.5))
    z = mixture.rsample((20000,))  # (S, 1, 1)
    assert z.shape == (20000, 1, 1)
    component = torch.bucketize(z.flatten(), torch.tensor([-5.0, 5.0]))
    frequencies = torch.bincount(component, minlength=3) / 20000
    # binomial standard errors are below 0.0035: 4 of them
    torch.testing.assert_close(frequencies, torch.tensor([0.6, 0.3, 0.1]), atol=0.014, rtol=0)
    z.sum().backward()
    torch.testing.assert_close(mean.grad.flatten(), frequencies * 20000)
    assert not mixture.sample((3,)).requires_grad


def test_point_is_the_heaviest_components_mean():
    mixture = _mixture()
    heaviest = mixture.mixture_distribution.logits.argmax(-1)
    for b in range(2):
        torch.testing.assert_close(latent_point(mixture)[b], mixture.components.loc[b, heaviest[b]])
    normal = Normal(torch.randn(2, 3), torch.ones(2, 3))
    assert latent_point(normal) is normal.mean


def test_kl_to_a_mixture_is_the_monte_carlo_estimate_of_the_gaussian_kl():
    """A one-component mixture is a Gaussian: the estimate agrees with the closed form."""
    q = Normal(torch.randn(2, 3, 1, 1), torch.rand(2, 3, 1, 1) + 0.5)
    p = Normal(torch.randn(2, 3, 1, 1), torch.rand(2, 3, 1, 1) + 0.5)
    as_mixture = GaussianMixture(torch.zeros(2, 1), p.mean.unsqueeze(1), p.stddev.unsqueeze(1))
    exact = kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(latent_kl(q, p), exact)
    estimate = latent_kl(q, as_mixture, q.sample((40000,)))
    torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="needs posterior samples"):
        latent_kl(q, as_mixture)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="logits \\(B, M\\)"):
        GaussianMixture(torch.zeros(2, 3), torch.zeros(2, 4, 5), torch.ones(2, 4, 5))


def _model(objective, **kwargs):
    return cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=3, objective=objective, latent_channels=4,
        latent_stride=32, prior_components=4, probe_size=64, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("objective", ["cvae", "hybrid"])
def test_objectives_with_a_kl_train_every_part_of_a_mixture_prior(objective):
    model = _model(objective)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    assert isinstance(model.prior(x), GaussianMixture)
    out = model.loss(x, y)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for parameter in model.prior_net.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert model.sample(x, 5).shape == (5, 2, 3, 64, 64)
    assert model.log_likelihood(x, y, 8).shape == (2,)


@pytest.mark.parametrize("objective", ["gdnn", "gsnn"])
def test_objectives_without_a_kl_refuse_a_mixture_prior(objective):
    """Their losses never evaluate log p(z|x), so the mixture weights could not learn."""
    with pytest.raises(ValueError, match=f"prior_components=4 needs .* '{objective}'"):
        _model(objective)


def test_elbo_kl_is_the_log_ratio_at_the_decoded_sample():
    model = _model("cvae", scale_weights=(0, 0, 1)).eval()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    torch.manual_seed(4)
    kl = model.loss(x, y).terms["kl"]
    torch.manual_seed(4)
    prior = model.prior(x)
    q = model.posterior(x, y)
    z = q.rsample((1,))
    expected = (latent_log_density(q, z) - latent_log_density(prior, z)).mean()
    torch.testing.assert_close(kl, expected)


def test_importance_weighted_bound_uses_the_mixture_density():
    """The k-sample training bound stays the k-sample IS estimate under a mixture prior."""
    model = _model("cvae", importance_samples=6, scale_weights=(0, 0, 1)).eval()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    torch.manual_seed(5)
    out = model.loss(x, y)
    torch.manual_seed(5)
    estimate = model.log_likelihood(x, y, num_samples=6, method="importance", chunk_size=6)
    torch.testing.assert_close(-out.terms["iw_bound"] * y[0].numel(), estimate.mean())
    assert math.isfinite(float(out.terms["kl"]))


def test_round_trip_keeps_the_mixture(tmp_path):
    model = _model("cvae").eval()
    model.save_pretrained(tmp_path / "m")
    loaded = cvae_seg.from_pretrained(tmp_path / "m")
    assert loaded.prior_net.components == 4
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(7)
    expected = model.sample(x, 3)
    torch.manual_seed(7)
    torch.testing.assert_close(loaded.sample(x, 3), expected)


def test_the_mlp_models_refuse_a_mixture_prior():
    config = Config.model_validate(
        {
            "model": {"arch": "mnist_mlp", "prior_components": 4},
            "data": {"dataset": "mnist"},
            "train": {"best_metric": "nll"},
        }
    )
    with pytest.raises(ValueError, match=r"model \(arch 'mnist_mlp'\): prior_components=4"):
        build_model(config, num_classes=2)
