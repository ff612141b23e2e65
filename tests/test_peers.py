"""The peer heads (Probabilistic U-Net, SSN, MC dropout, ensembles) on smp backbones."""

import json
import math

import pytest
import torch
from conftest import TEST_ENCODER

import cvae_seg

PEERS = ["probunet", "ssn", "mc_dropout", "ensemble"]
CLASSES = 3


def _peer(head, arch="Unet", **kwargs):
    if head == "ensemble":
        kwargs.setdefault("members", 2)
    return cvae_seg.create_model(
        arch, encoder_name=TEST_ENCODER, classes=CLASSES, head=head, **kwargs
    )


def _batch(size=64):
    return torch.randn(2, 3, size, size), torch.randint(0, CLASSES, (2, size, size))


@pytest.mark.parametrize("arch", ["Unet", "FPN"])
@pytest.mark.parametrize("head", PEERS)
def test_every_peer_trains_samples_and_scores(head, arch):
    model = _peer(head, arch)
    x, y = _batch()
    out = model.loss(x, y)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    # every parameter is in the graph (DDP runs without searching for unused ones), and the
    # heads and the backbone learn
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused
    for part in (model.backbone, *(m for n, m in model.named_children() if n != "backbone")):
        assert any(p.grad.abs().sum() > 0 for p in part.parameters())
    assert model(x).shape == (2, CLASSES, 64, 64)
    samples = model.sample(x, num_samples=4)
    assert samples.shape == (4, 2, CLASSES, 64, 64)
    assert not torch.allclose(samples[0], samples[1])  # the samples differ
    ll = model.log_likelihood(x, y, num_samples=4)
    assert ll.shape == (2,) and bool(torch.isfinite(ll).all()) and bool((ll < 0).all())


@pytest.mark.parametrize("head", PEERS)
def test_peers_save_and_reload(head, tmp_path):
    model = _peer(head)
    model.save_pretrained(tmp_path)
    loaded = cvae_seg.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and json.dumps(loaded.config) == json.dumps(model.config)
    x, _ = _batch()
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    torch.manual_seed(3)
    expected = model.sample(x, 3)
    torch.manual_seed(3)
    torch.testing.assert_close(loaded.sample(x, 3), expected)


def test_mc_dropout_prediction_is_the_network_without_dropout():
    model = _peer("mc_dropout", dropout=0.3).eval()
    x, _ = _batch()
    logits, _ = cvae_seg.models.segmentation.run_backbone(model.backbone, x)
    torch.testing.assert_close(model(x), logits)
    masks = model.prior(x).sample((2000,))
    assert abs(float(masks.mean()) - 0.7) < 0.01  # channels kept with probability 1 - p


def test_ensemble_likelihood_is_the_exact_mixture():
    model = _peer("ensemble", members=3).eval()
    x, y = _batch()
    every = model.encode(x).logits  # (M, B, C, H, W)
    per_member = torch.stack([-torch.nn.functional.cross_entropy(m, y, reduction="none")
                              .sum((1, 2)) for m in every])  # fmt: skip
    expected = torch.logsumexp(per_member, 0) - math.log(3)
    torch.testing.assert_close(model.log_likelihood(x, y), expected)
    # the prediction averages the members' probabilities
    torch.testing.assert_close(model(x).exp(), every.softmax(2).mean(0))
    # exact whatever the sampling settings; an unknown or impossible method is refused
    torch.testing.assert_close(model.log_likelihood(x, y, num_samples=2, chunk_size=1), expected)
    with pytest.raises(ValueError, match="method must be"):
        model.log_likelihood(x, y, method="bogus")
    with pytest.raises(ValueError, match="needs a recognition net"):
        model.log_likelihood(x, y, method="importance")


def test_ssn_logit_distribution_has_the_backbone_logits_as_mean_and_low_rank():
    model = _peer("ssn", rank=2).eval()
    x, _ = _batch(32)
    prior = model.prior(x)
    logits, _ = cvae_seg.models.segmentation.run_backbone(model.backbone, x)
    torch.testing.assert_close(prior.mean, logits.flatten(1))
    assert prior.cov_factor.shape == (2, CLASSES * 32 * 32, 2)
    draws = prior.sample((4000,))
    empirical = (draws - prior.mean).pow(2).mean(0)
    torch.testing.assert_close(empirical, prior.variance, rtol=0.15, atol=1e-3)


def test_ssn_loss_is_the_monte_carlo_log_likelihood():
    model = _peer("ssn", train_samples=5).eval()
    x, y = _batch(32)
    torch.manual_seed(1)
    loss = model.loss(x, y).loss
    torch.manual_seed(1)
    weights = model.log_likelihood_weights(x, y, num_samples=5, chunk_size=5)
    expected = -(torch.logsumexp(weights, 0) - math.log(5)).sum() / y.numel()
    torch.testing.assert_close(loss, expected)


def test_ssn_antithetic_loss_is_the_likelihood_of_mirrored_maps():
    """The SSN paper's code draws its training maps in pairs, eta and 2 mu - eta."""
    model = _peer("ssn", train_samples=4, antithetic=True).eval()
    x, y = _batch(32)
    torch.manual_seed(3)
    loss = model.loss(x, y).loss
    torch.manual_seed(3)
    prior = model.prior(x)
    offsets = prior.rsample((2,)) - prior.mean  # the loss's draws, replayed
    maps = torch.cat([offsets, -offsets]) + prior.mean
    maps = maps.view(4, *y.shape[:1], CLASSES, 32, 32)
    nll = torch.stack([torch.nn.functional.cross_entropy(m, y, reduction="none").sum((1, 2))
                       for m in maps])  # fmt: skip
    expected = -(torch.logsumexp(-nll, 0) - math.log(4)).sum() / y.numel()
    torch.testing.assert_close(loss, expected)
    independent = _peer("ssn", train_samples=4).eval()
    independent.load_state_dict(model.state_dict())
    torch.manual_seed(3)  # the same weights and seed: only the pairing differs
    assert not torch.allclose(independent.loss(x, y).loss, loss)
    with pytest.raises(ValueError, match="train_samples must be even, got 5"):
        _peer("ssn", train_samples=5, antithetic=True)


def test_probunet_latent_is_global_and_its_loss_is_the_beta_elbo():
    model = _peer("probunet", latent_channels=4, kl_weight=0.5)
    x, y = _batch()
    assert model.prior(x).mean.shape == (2, 4, 1, 1)
    assert model.posterior(x, y).mean.shape == (2, 4, 1, 1)
    terms = model.loss(x, y).terms
    pixels = y.numel()
    torch.testing.assert_close(terms["loss"],
                               terms["nll_posterior"] + 0.5 * terms["kl"] * 2 / pixels)  # fmt: skip


def test_heads_refuse_what_they_do_not_take():
    with pytest.raises(ValueError, match="head must be one of"):
        _peer("probunett")
    with pytest.raises(TypeError, match=r"latent_stride for the 'ssn' head"):
        _peer("ssn", latent_stride=8)
    with pytest.raises(ValueError, match="trains on its own objective"):
        _peer("mc_dropout", objective="hybrid")
    with pytest.raises(ValueError, match="members must be an integer >= 2"):
        _peer("ensemble", members=1)
    with pytest.raises(ValueError, match=r"dropout must be in \(0, 1\)"):
        _peer("mc_dropout", dropout=1.0)


def test_a_training_config_chooses_the_head():
    from conftest import tiny_demo_config

    from cvae_seg.training import build_model

    head = ["model.head=ssn", "model.rank=3", f"model.encoder_name={TEST_ENCODER}"]
    with pytest.raises(ValueError, match=r"model\.latent_channels does not apply"):
        build_model(tiny_demo_config(*head), CLASSES)  # the demo sets the CVAE's latent size
    config = tiny_demo_config(*head, "model.latent_channels=32")  # back to the default
    model = build_model(config, CLASSES)
    assert isinstance(model, cvae_seg.StochasticSegmentationNetwork) and model.rank == 3
    assert not model.antithetic
    assert build_model(tiny_demo_config(*head, "model.latent_channels=32",
                                        "model.antithetic=true"), CLASSES).antithetic  # fmt: skip
    with pytest.raises(ValueError, match=r"model\.rank does not apply"):
        build_model(tiny_demo_config("model.rank=3"), CLASSES)


@pytest.mark.parametrize("head", ["probunet", "ssn"])
def test_iterative_completion_works_for_peers(head):
    """Table 4's iterative inference needs a recognition net: the ProbUNet has one; the SSN
    gives its plain prediction back."""
    model = _peer(head).eval()
    x, y = _batch()
    observed = torch.rand(y.shape) < 0.5
    completed = model.complete(x, y, observed, num_iterations=2)
    assert completed.shape == (2, CLASSES, 64, 64)
    if model.recognition_net is None:
        torch.testing.assert_close(completed, model.predict(x))


@pytest.mark.parametrize("head", ["cvae", *PEERS])
def test_decode_takes_prior_draws_for_a_batch_of_any_size(head):
    # three inputs against two ensemble members: decode must read the batch size from the
    # inputs, not from the members' stacked logits
    model = _peer(head).eval()
    x = torch.randn(3, 3, 64, 64)
    encoded = model.encode(x)
    z = model.prior(x).sample((4,))
    logits = model.decode(encoded, z)
    assert logits.shape == (4, 3, CLASSES, 64, 64)
    with pytest.raises(ValueError, match="B = 3 inputs"):
        model.decode(encoded, z[:, :2])


@pytest.mark.parametrize("head", ["cvae", *PEERS])
def test_likelihood_weights_hold_no_graph(head):
    model = _peer(head)
    x, y = _batch()
    weights = model.log_likelihood_weights(x, y, num_samples=3, chunk_size=2)
    assert not weights.requires_grad


def test_ensemble_from_models_trained_apart_is_their_mixture(tmp_path):
    torch.manual_seed(0)
    members = [
        cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, classes=CLASSES, objective="cnn",
                              ignore_index=255) for _ in range(3)
    ]  # fmt: skip
    model = cvae_seg.models.DeepEnsemble.from_models(members).eval()
    assert model.ignore_index == 255  # the members' own, unless given
    x, y = _batch()
    per_member = torch.stack([m.eval().log_likelihood(x, y) for m in members])
    torch.testing.assert_close(model.log_likelihood(x, y), torch.logsumexp(per_member, 0)
                               - math.log(3))  # fmt: skip
    probabilities = torch.stack([m(x).softmax(1) for m in members])  # m(x): logits
    torch.testing.assert_close(model(x).exp(), probabilities.mean(0))
    model.save_pretrained(tmp_path)  # one architecture: it saves and reloads as any ensemble
    torch.testing.assert_close(cvae_seg.from_pretrained(tmp_path).predict(x), model.predict(x))


def test_ensemble_from_models_refuses_members_it_cannot_average():
    cvae = cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, classes=CLASSES)
    cnn = cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, classes=CLASSES,
                                objective="cnn")  # fmt: skip
    with pytest.raises(ValueError, match=r"models\[1\] is a 'cvae' head with objective 'cvae'"):
        cvae_seg.models.DeepEnsemble.from_models([cnn, cvae])
    other = cvae_seg.create_model("FPN", encoder_name=TEST_ENCODER, classes=CLASSES,
                                  objective="cnn")  # fmt: skip
    with pytest.raises(ValueError, match=r"models\[1\] is FPN .* share one architecture"):
        cvae_seg.models.DeepEnsemble.from_models([cnn, other])
    with pytest.raises(ValueError, match="at least 2 members"):
        cvae_seg.models.DeepEnsemble.from_models([cnn])
