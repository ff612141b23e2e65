"""One tester over every smp architecture x every objective (the smp manner), plus behaviour."""

import copy
import io
import math
from pathlib import Path

import pytest
import torch
from conftest import TEST_ENCODER
from torch import nn
from torch.distributions import Normal

import cvae_seg
from cvae_seg import CVAE
from cvae_seg.config import load_config
from cvae_seg.training import build_model

ARCHITECTURES = [
    "Unet",
    "UnetPlusPlus",
    "MAnet",
    "Linknet",
    "FPN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "PAN",
    "UPerNet",
    "Segformer",
]
OBJECTIVES = ["cnn", "gdnn", "gsnn", "cvae", "hybrid"]
CLASSES = 3


def _size(arch: str) -> int:
    return 128 if arch == "PAN" else 64  # PAN with tu-test_resnet needs 128 px


def _batch(size: int, batch: int = 2):
    # batch >= 2: DeepLabV3(Plus), PAN and UPerNet cannot train on one image (BatchNorm).
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, CLASSES, (batch, size, size))
    return x, y


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_and_objective(arch, objective):
    model = cvae_seg.create_model(
        arch, encoder_name=TEST_ENCODER, classes=CLASSES, objective=objective
    )
    size = _size(arch)
    x, y = _batch(size)

    out = model.loss(x, y)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.logits) == {4, 2, 1}
    for stride, logits in out.logits.items():
        assert logits.shape == (2, CLASSES, size // stride, size // stride)
    out.loss.backward()
    encoder_grads = [p.grad for p in model.backbone.encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    for net in (model.prior_net, model.recognition_net, model.generation_net):
        if net is not None:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    samples = model.sample(x, num_samples=3)
    assert samples.shape == (3, 2, CLASSES, size, size)
    identical = torch.equal(samples[0], samples[1]) and torch.equal(samples[1], samples[2])
    assert identical != model.spec.stochastic
    assert model.training, "inference methods must give the caller's mode back"

    prediction = model.predict(x)
    assert prediction.shape == (2, CLASSES, size, size)
    log_likelihood = model.log_likelihood(x, y, num_samples=4)
    assert log_likelihood.shape == (2,) and torch.all(log_likelihood < 0)

    # save/load round trip: same predictions, same samples for the same seed
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = cvae_seg.create_model(
        arch, encoder_name=TEST_ENCODER, classes=CLASSES, objective=objective
    )
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(clone.predict(x), prediction)
    torch.manual_seed(1)
    expected = model.sample(x, num_samples=2)
    torch.manual_seed(1)
    torch.testing.assert_close(clone.sample(x, num_samples=2), expected)


def test_dpt_with_a_vit_encoder():
    model = cvae_seg.create_model("DPT", encoder_name="tu-test_vit", classes=CLASSES)
    x, y = _batch(64)
    out = model.loss(x, y)
    out.loss.backward()
    assert out.logits[1].shape == (2, CLASSES, 64, 64)
    assert model.sample(x, 2).shape == (2, 2, CLASSES, 64, 64)


@pytest.mark.parametrize("objective", ["gdnn", "gsnn", "cvae", "hybrid"])
def test_sohn2015_backbone_with_the_papers_generation_net(objective):
    model = cvae_seg.create_model(
        "sohn2015",
        classes=2,
        objective=objective,
        generation="sohn2015",
        gaussian_kernel_sizes=(9, 5, 3),
    )
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 2, (2, 64, 64))
    out = model.loss(x, y)
    out.loss.backward()
    assert out.logits[1].shape == (2, 2, 64, 64)
    assert model.sample(x, 2).shape == (2, 2, 2, 64, 64)


def _unet(objective="cvae", **kwargs) -> CVAE:
    return cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=CLASSES, objective=objective, **kwargs
    )


def test_wrapping_an_smp_model_keeps_it_intact():
    import segmentation_models_pytorch as smp

    backbone = smp.FPN(TEST_ENCODER, encoder_weights=None, classes=CLASSES)
    reference = copy.deepcopy(backbone).eval()
    model = CVAE(backbone, objective="gsnn")
    assert model.backbone is backbone
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), reference(x))
    assert not backbone._forward_hooks and not backbone.segmentation_head._forward_hooks


@pytest.mark.parametrize("objective", ["gdnn", "gsnn", "cvae", "hybrid"])
def test_output_depends_on_z(objective):
    model = _unet(objective)
    x, _ = _batch(64)
    z = torch.randn(2, 2, 32, 4, 4)
    logits = model.decode(x, z)
    assert logits.shape == (2, 2, CLASSES, 64, 64)
    assert not torch.allclose(logits[0], logits[1])
    torch.testing.assert_close(model.decode(x, z[:1])[0], logits[0])


def test_cnn_has_no_latent():
    model = _unet("cnn")
    assert model.prior_net is None and model.recognition_net is None
    with pytest.raises(ValueError, match="no latent"):
        model.decode(torch.randn(1, 3, 64, 64), torch.randn(1, 1, 32, 4, 4))


@pytest.mark.parametrize(
    ("objective", "settings", "unused"),
    [
        ("cnn", {"latent_channels": 8, "kl_weight": 2.0}, ["latent_channels=8", "kl_weight=2.0"]),
        ("gsnn", {"importance_samples": 4}, ["importance_samples=4"]),
        ("cvae", {"alpha": 0.2}, ["alpha=0.2"]),
        ("cvae", {"generation": "sohn2015", "generation_hidden": 7}, ["generation_hidden=7"]),
    ],
)
def test_a_setting_the_objective_never_reads_is_named_in_a_warning(objective, settings, unused):
    with pytest.warns(UserWarning, match=f"objective '{objective}'") as caught:
        cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, encoder_weights=None,
                              classes=CLASSES, objective=objective, **settings)  # fmt: skip
    (message,) = [str(w.message) for w in caught if "does not use" in str(w.message)]
    assert message.endswith(f"does not use {', '.join(unused)}: ignored")


def test_settings_the_objective_reads_raise_no_warning(recwarn):
    cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, encoder_weights=None,
                          classes=CLASSES, objective="hybrid", alpha=0.2, kl_weight=2.0,
                          importance_samples=4, latent_channels=8)  # fmt: skip
    assert not [w for w in recwarn if "does not use" in str(w.message)]


class _FixedGaussian(nn.Module):
    """Ignores its input: the same Gaussian for every call, to make q equal p."""

    def __init__(self, shape):
        super().__init__()
        self.mean = nn.Parameter(torch.randn(shape))
        self.log_scale = nn.Parameter(torch.randn(shape) * 0.1)

    def forward(self, inputs):
        batch = inputs.shape[0]
        return Normal(
            self.mean.expand(batch, -1, -1, -1), self.log_scale.exp().expand(batch, -1, -1, -1)
        )


def test_kl_is_zero_when_q_equals_p():
    model = _unet("cvae")
    x, y = _batch(64)
    assert model.loss(x, y).terms["kl"] > 0
    shared = _FixedGaussian((32, 4, 4))
    model.prior_net = model.recognition_net = shared
    out = model.loss(x, y)
    assert out.terms["kl"] == 0
    assert out.loss.item() == pytest.approx(
        float(out.terms["nll_x4"] + out.terms["nll_x2"] + out.terms["nll_posterior"]), rel=1e-6
    )


def test_hybrid_is_the_alpha_mixture_of_cvae_and_gsnn():
    torch.manual_seed(3)
    model = _unet("hybrid", alpha=0.25)
    x, y = _batch(64)
    terms = model.loss(x, y).terms
    expected = (
        terms["nll_x4"]
        + terms["nll_x2"]
        + 0.25 * (terms["nll_posterior"] + terms["kl"] * 2 / (64 * 64 * 2))
        + 0.75 * terms["nll_prior"]
    )
    torch.testing.assert_close(terms["loss"], expected)


def test_importance_weighted_training_bound_is_the_importance_sampling_estimate():
    """With k samples the training term is exactly the k-sample IS estimate of log p(y|x)."""
    model = _unet("cvae", importance_samples=8, scale_weights=(0, 0, 1))
    model.eval()  # no BatchNorm batch statistics: the two calls see the same networks
    x, y = _batch(64)
    torch.manual_seed(5)
    out = model.loss(x, y)
    torch.manual_seed(5)
    estimate = model.log_likelihood(x, y, num_samples=8, method="importance", chunk_size=8)
    torch.testing.assert_close(-out.terms["iw_bound"] * y.numel(), estimate.sum())
    torch.testing.assert_close(out.loss, out.terms["iw_bound"])


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    elbo_model = _unet("cvae", scale_weights=(0, 0, 1))
    weighted = copy.deepcopy(elbo_model)
    weighted.importance_samples = 16
    x, y = _batch(64)
    elbo = torch.stack([elbo_model.loss(x, y).loss for _ in range(8)]).mean()
    bound = torch.stack([weighted.loss(x, y).loss for _ in range(8)]).mean()
    assert bound < elbo
    bound.backward()
    for net in (weighted.prior_net, weighted.recognition_net, weighted.generation_net):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("elbo_share", [0.0, 0.3])
def test_importance_weighted_gradients_are_the_doubly_reparameterised_ones(elbo_share):
    """q learns through z with squared weights (DReG); p and the decoder get IWAE's. An ELBO
    share s mixes in the k-sample ELBO: weight 1/k per sample for all three nets."""
    torch.manual_seed(1)
    k = 4
    model = _unet("cvae", importance_samples=k, elbo_share=elbo_share, scale_weights=(0, 0, 1))
    model.eval()
    x, y = _batch(64)
    torch.manual_seed(2)
    out = model.loss(x, y)
    out.loss.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    def reference(net: str, squared: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(2)
        encoded = model.encode(x)
        q = model.posterior(x, y)
        z = q.rsample((k,))
        frozen = Normal(q.mean.detach(), q.stddev.detach())
        z_used = z if squared else z.detach()
        nll = model.reconstruction_nll(
            model.decode(encoded, z_used).flatten(0, 1), y.repeat(k, 1, 1)
        )
        log_w = -nll.view(k, -1) + (
            encoded.prior.log_prob(z_used) - frozen.log_prob(z_used)
        ).flatten(2).sum(-1)
        w = torch.softmax(log_w.detach(), 0)
        weights = (1 - elbo_share) * (w**2 if squared else w) + elbo_share / k
        objective = (1 - elbo_share) * (log_w.logsumexp(0) - math.log(k)) + elbo_share * log_w.mean(
            0
        )
        torch.testing.assert_close(out.loss, -objective.sum().detach() / y.numel())
        (-(weights * log_w).sum() / y.numel()).backward()
        return {n: p.grad for n, p in model.named_parameters() if n.startswith(net)}

    for name, grad in reference("recognition_net", squared=True).items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7)
    for net in ("generation_net", "prior_net"):
        for name, grad in reference(net, squared=False).items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7)


def test_elbo_share_needs_a_weighted_bound_and_a_share():
    with pytest.raises(ValueError, match="importance_samples > 1"):
        _unet("cvae", elbo_share=0.5)
    with pytest.raises(ValueError, match="elbo_share must be in"):
        _unet("cvae", importance_samples=4, elbo_share=1.5)
    configs = Path(__file__).resolve().parents[1] / "configs"
    config = load_config(configs / "known_truth_iw.yaml", ["model.elbo_share=0.3"])
    assert build_model(config, 2).elbo_share == 0.3  # the config key reaches the heads


def test_deterministic_objectives_give_identical_samples_and_exact_likelihood():
    model = _unet("gdnn")
    x, y = _batch(64)
    torch.testing.assert_close(
        model.log_likelihood(x, y, num_samples=1), model.log_likelihood(x, y, num_samples=50)
    )
    logits = model.predict(x)
    expected = -torch.nn.functional.cross_entropy(logits, y, reduction="none").sum((1, 2))
    torch.testing.assert_close(model.log_likelihood(x, y), expected)


def test_ignored_pixels_count_in_no_loss_or_likelihood():
    model = _unet("cnn", ignore_index=255, scale_weights=(0, 0, 1))
    x, y = _batch(64)
    y[:, :32] = 255
    logits = model.predict(x)
    labelled = y != 255
    nll = torch.nn.functional.cross_entropy(logits, y.clamp_max(CLASSES - 1), reduction="none")
    torch.testing.assert_close(model.log_likelihood(x, y), -(nll * labelled).sum((1, 2)))
    model.eval()
    torch.testing.assert_close(
        model.loss(x, y).terms["nll"], (nll * labelled).sum() / labelled.sum()
    )


def test_multiscale_can_be_turned_off():
    model = _unet("cnn", scale_weights=(0, 0, 1))
    x, y = _batch(64)
    out = model.loss(x, y)
    assert set(out.logits) == {1} and set(out.terms) == {"nll", "loss"}


def test_importance_sampling_needs_a_recognition_net():
    model = _unet("gsnn")
    x, y = _batch(64)
    with pytest.raises(ValueError, match="recognition net"):
        model.log_likelihood(x, y, method="importance")
    assert model.log_likelihood(x, y, num_samples=3).shape == (2,)  # auto -> Monte Carlo


def test_average_prediction_returns_log_probabilities():
    model = _unet("cvae")
    x, _ = _batch(64)
    log_probs = model.predict(x, method="average", num_samples=4)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2, 64, 64))


def test_short_training_lowers_the_loss():
    model = _unet("hybrid")
    x, _ = _batch(64, batch=4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # a pixel-wise function of the input
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        out = model.loss(x, y)
        out.loss.backward()
        optimizer.step()
        losses.append(out.terms["nll_prior"].item())
    # the coarse terms cannot fall much on pixel noise; the full-resolution NLL must
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="objective must be one of"):
        _unet("vae")
    with pytest.raises(ValueError, match="classes=2"):
        cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, classes=1)
    with pytest.raises(ValueError, match="alpha"):
        _unet("hybrid", alpha=1.5)
    with pytest.raises(ValueError, match="power of two"):
        _unet(latent_stride=12)
    model = _unet()
    with pytest.raises(ValueError, match=r"x must be \(B, 3, H, W\)"):
        model.predict(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="y must be"):
        model.loss(torch.randn(2, 3, 64, 64), torch.zeros(2, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class labels"):
        model.loss(torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64))
    with pytest.raises(TypeError, match="segmentation_head"):
        CVAE(nn.Conv2d(3, 3, 1))
