"""CVAE: conditional generative heads around any smp encoder-decoder model.

The user's model stays intact as ``model.backbone``. One backbone pass gives the decoder
features d (the input of its ``segmentation_head``, caught with a forward hook, which works
whatever the decoder's call signature) and the logits s(x). On top of them:

- prior net p(z|x) on [x, softmax(2 s(x))] (the paper's recurrent connection) or on x;
- recognition net q(z|x,y) on [x, one-hot y], only for objectives that train with it;
- generation net: p(y|x,z) = softmax(s(x) + g(d, z)) at full resolution;
- multi-scale heads at 1/4 and 1/2 resolution on d, trained with soft coarse targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from cvae_seg.heads import GaussianConvNet, LightGenerationNet, Sohn2015GenerationNet
from cvae_seg.likelihood import importance_log_weights, log_mean_exp, monte_carlo_log_weights
from cvae_seg.multiscale import (
    MultiScaleHeads,
    one_hot_labels,
    pixel_nll,
    soft_coarse_targets,
    soft_nll,
)
from cvae_seg.objectives import LatentSource, get_objective

__all__ = ["CVAE", "CVAEOutput"]

LikelihoodMethod = Literal["auto", "importance", "monte_carlo"]


@dataclass
class CVAEOutput:
    """What a training forward returns.

    ``loss`` is the scalar to backpropagate (negative ELBO per labelled pixel plus the coarse
    losses); ``terms`` holds its named parts, detached, for logging (``kl`` in nats per
    image); ``logits`` maps a stride (4, 2, 1) to that scale's (B, C, H/s, W/s) logits.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Encoded:
    """Everything computed once per input, shared by all latent samples."""

    size: tuple[int, int]
    logits: torch.Tensor  # backbone scores s(x), (B, C, H, W)
    features: torch.Tensor  # decoder features d
    context: torch.Tensor | None  # generation net's per-image part
    prior: Normal | None


class CVAE(nn.Module):
    """Wrap an smp model (or any model with a ``segmentation_head``) as a conditional VAE.

    Args:
        backbone: an smp encoder-decoder model returning (B, classes, H, W) logits.
        objective: "cnn", "gdnn", "gsnn", "cvae" or "hybrid" (see `cvae_seg.objectives`).
        latent_channels, latent_stride: the latent map, paper 32 channels at 1/16.
        gaussian_widths, gaussian_kernel_sizes: the prior and recognition nets' stages.
        generation: "light" (cheap samples, default) or "sohn2015" (the paper's g(z)).
        generation_hidden, generation_stride: width and resolution of the light net.
        recurrent: feed the backbone's guess softmax(2 s(x)) to the prior net.
        alpha: the hybrid's weight of the CVAE term.
        kl_weight: extra factor on the KL (1 is the ELBO).
        scale_weights: loss weights at strides (4, 2, 1); (0, 0, 1) turns multi-scale off.
        ignore_index: label of unlabelled pixels, excluded from every loss and likelihood.
        logvar_bound: log-variances are squashed into (-bound, bound).
        probe_size: side of the zero image used once to learn the decoder's width.
    """

    def __init__(
        self,
        backbone: nn.Module,
        objective: str = "cvae",
        *,
        latent_channels: int = 32,
        latent_stride: int = 16,
        gaussian_widths: tuple[int, ...] = (64, 96, 128),
        gaussian_kernel_sizes: tuple[int, ...] = (3, 3, 3),
        generation: Literal["light", "sohn2015"] = "light",
        generation_hidden: int = 64,
        generation_stride: int = 4,
        recurrent: bool = True,
        alpha: float = 0.5,
        kl_weight: float = 1.0,
        scale_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        ignore_index: int | None = None,
        logvar_bound: float = 6.0,
        probe_size: int = 128,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "segmentation_head"):
            raise TypeError(
                f"backbone {type(backbone).__name__} has no `segmentation_head`; expected an "
                "smp model (smp.create_model) or a cvae_seg architecture"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if len(scale_weights) != 3 or min(scale_weights) < 0:
            raise ValueError(
                f"scale_weights must be three non-negative weights for strides (4, 2, 1), got "
                f"{scale_weights}"
            )
        if generation not in ("light", "sohn2015"):
            raise ValueError(f"generation must be 'light' or 'sohn2015', got {generation!r}")
        self.spec = get_objective(objective)
        self.objective = objective
        self.backbone = backbone
        self.alpha = alpha
        self.kl_weight = kl_weight
        self.recurrent = recurrent
        self.ignore_index = ignore_index
        self.scale_weights = tuple(float(w) for w in scale_weights)
        self.generation_stride = generation_stride

        self.in_channels = _first_conv(backbone).in_channels
        feature_channels, self.num_classes = _probe_backbone(self, probe_size)
        if self.num_classes < 2:
            raise ValueError(
                "the backbone predicts 1 class; cvae_seg models a categorical p(y|x,z): build "
                "the backbone with classes=2 for binary segmentation"
            )

        coarse = tuple(s for s, w in zip((4, 2), self.scale_weights[:2], strict=True) if w > 0)
        self.multiscale_heads = MultiScaleHeads(feature_channels, self.num_classes, coarse)

        self.prior_net = self.recognition_net = self.generation_net = None
        if self.spec.uses_latent:
            gaussian = dict(
                latent_channels=latent_channels,
                latent_stride=latent_stride,
                widths=tuple(gaussian_widths),
                kernel_sizes=tuple(gaussian_kernel_sizes),
                logvar_bound=logvar_bound,
            )
            prior_in = self.in_channels + (self.num_classes if recurrent else 0)
            self.prior_net = GaussianConvNet(prior_in, **gaussian)
            if self.spec.needs_recognition:
                self.recognition_net = GaussianConvNet(
                    self.in_channels + self.num_classes, **gaussian
                )
            if generation == "light":
                self.generation_net = LightGenerationNet(
                    feature_channels, latent_channels, self.num_classes, generation_hidden
                )
            else:
                self.generation_net = Sohn2015GenerationNet(
                    latent_channels, self.num_classes, latent_stride
                )

    # ----------------------------------------------------------------- shared computation
    def _run_backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        hook = self.backbone.segmentation_head.register_forward_hook(
            lambda _module, inputs, _output: captured.append(inputs[0])
        )
        try:
            logits = self.backbone(x)
        finally:
            hook.remove()
        if isinstance(logits, tuple | list):  # smp models with aux_params return (masks, labels)
            logits = logits[0]
        return logits, captured[-1]

    def _encode(self, x: torch.Tensor) -> _Encoded:
        _check_image(x, self.in_channels)
        size = (x.shape[-2], x.shape[-1])
        logits, features = self._run_backbone(x)
        context = prior = None
        if self.spec.uses_latent:
            stride = self.generation_stride
            context = self.generation_net.prepare(
                features, (-(-size[0] // stride), -(-size[1] // stride))
            )
            prior_input = torch.cat([x, torch.softmax(2 * logits, 1)], 1) if self.recurrent else x
            prior = self.prior_net(prior_input)
        return _Encoded(size, logits, features, context, prior)

    def _decode(self, encoded: _Encoded, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, Cz, h, w) -> full-resolution logits (S, B, C, H, W)."""
        scores = self.generation_net(z, encoded.context)
        if tuple(scores.shape[-2:]) != encoded.size:
            scores = F.interpolate(scores, size=encoded.size, mode="bilinear", align_corners=False)
        return encoded.logits.unsqueeze(0) + scores.unflatten(0, tuple(z.shape[:2]))

    def _deterministic_logits(self, encoded: _Encoded) -> torch.Tensor:
        """s(x) for the CNN, s(x) + g(E[z|x]) otherwise: the paper's prediction."""
        if not self.spec.uses_latent:
            return encoded.logits
        return self._decode(encoded, encoded.prior.mean.unsqueeze(0))[0]

    # ---------------------------------------------------------------------- training
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> CVAEOutput | torch.Tensor:
        """Training: (x, y) -> CVAEOutput. Without y, the deterministic prediction's logits."""
        if y is None:
            return self._deterministic_logits(self._encode(x))
        y = _check_labels(y, x)
        encoded = self._encode(x)
        one_hot = one_hot_labels(y, self.num_classes, self.ignore_index)
        labelled_per_image = one_hot.sum((1, 2, 3))
        labelled = labelled_per_image.sum().clamp_min(1)
        terms: dict[str, torch.Tensor] = {}
        loss = encoded.logits.new_zeros(())

        logits = self.multiscale_heads(encoded.features, encoded.size)
        for stride, coarse_logits in logits.items():
            nll = soft_nll(coarse_logits, soft_coarse_targets(one_hot, stride))
            terms[f"nll_x{stride}"] = nll
            loss = loss + self.scale_weights[(4, 2).index(stride)] * nll
        full_weight = self.scale_weights[2]

        if not self.spec.uses_latent:
            nll = pixel_nll(encoded.logits, y, self.ignore_index).sum() / labelled
            terms["nll"] = nll
            loss = loss + full_weight * nll
            full_logits = encoded.logits
        else:
            posterior = None
            if self.spec.needs_recognition:
                posterior = self.recognition_net(torch.cat([x, one_hot], 1))
            sources = self.spec.terms(self.alpha)
            z = torch.stack([_draw(src, encoded.prior, posterior) for src, _ in sources])
            decoded = self._decode(encoded, z)
            for (source, weight), source_logits in zip(sources, decoded, strict=True):
                nll = pixel_nll(source_logits, y, self.ignore_index).sum() / labelled
                terms[f"nll_{source}"] = nll
                loss = loss + full_weight * weight * nll
            full_logits = decoded[0]
            kl_share = self.spec.kl_weight(self.alpha)
            if kl_share > 0:
                kl = _gaussian_kl(posterior, encoded.prior)  # (B,) nats per image
                terms["kl"] = kl.mean()
                loss = loss + kl_share * self.kl_weight * kl.sum() / labelled

        logits[1] = full_logits
        terms["loss"] = loss
        return CVAEOutput(loss, {k: v.detach() for k, v in terms.items()}, logits)

    # ---------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(
        self,
        x: torch.Tensor,
        method: Literal["mean", "average"] = "mean",
        num_samples: int = 16,
    ) -> torch.Tensor:
        """Deterministic prediction (B, C, H, W), in eval mode without gradients.

        "mean" decodes the prior mean (the paper's tables); "average" returns the log of
        p(y|x,z) averaged over ``num_samples`` prior samples (log-probabilities).
        """
        if method not in ("mean", "average"):
            raise ValueError(f"method must be 'mean' or 'average', got {method!r}")
        with _inference_mode(self):
            if method == "mean" or not self.spec.stochastic:
                return self._deterministic_logits(self._encode(x))
            samples = self._sample(self._encode(x), num_samples)
            return log_mean_exp(torch.log_softmax(samples, dim=2), dim=0)

    @torch.no_grad()
    def sample(self, x: torch.Tensor, num_samples: int = 16) -> torch.Tensor:
        """Logits of ``num_samples`` plausible segmentations, (S, B, C, H, W).

        The backbone and the prior run once; all latents are decoded as one batch.
        Deterministic objectives (cnn, gdnn) return S identical maps.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        with _inference_mode(self):
            return self._sample(self._encode(x), num_samples)

    def _sample(self, encoded: _Encoded, num_samples: int) -> torch.Tensor:
        if not self.spec.stochastic:
            logits = self._deterministic_logits(encoded)
            return logits.unsqueeze(0).expand(num_samples, *logits.shape)
        return self._decode(encoded, encoded.prior.sample((num_samples,)))

    @torch.no_grad()
    def decode(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits (S, B, C, H, W) of p(y|x,z) for given latents z (S, B, Cz, h, w)."""
        if not self.spec.uses_latent:
            raise ValueError(f"objective {self.objective!r} has no latent variable to decode")
        with _inference_mode(self):
            return self._decode(self._encode(x), z)

    @torch.no_grad()
    def complete(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        observed: torch.Tensor,
        num_iterations: int = 5,
        latent: Literal["mean", "sample"] = "mean",
    ) -> torch.Tensor:
        """Label the unobserved pixels given the observed ones (the paper's Table 4).

        Starts from the plain prediction, then alternates (a) z from the recognition net given
        x and the current labels (``y`` where ``observed`` is True, the last prediction
        elsewhere) and (b) a new prediction from p(y|x,z). Returns logits (B, C, H, W).
        Objectives without a recognition net return the plain prediction.
        """
        if latent not in ("mean", "sample"):
            raise ValueError(f"latent must be 'mean' or 'sample', got {latent!r}")
        y = _check_labels(y, x)
        if observed.shape != y.shape or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a bool mask of shape {tuple(y.shape)}, got "
                f"{observed.dtype} {tuple(observed.shape)}"
            )
        with _inference_mode(self):
            encoded = self._encode(x)
            logits = self._deterministic_logits(encoded)
            if self.recognition_net is None:
                return logits
            for _ in range(num_iterations):
                current = torch.where(observed, y, logits.argmax(1))
                one_hot = one_hot_labels(current, self.num_classes, self.ignore_index)
                posterior = self.recognition_net(torch.cat([x, one_hot], 1))
                z = posterior.mean if latent == "mean" else posterior.sample()
                logits = self._decode(encoded, z.unsqueeze(0))[0]
            return logits

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_samples: int = 50,
        method: LikelihoodMethod = "auto",
        chunk_size: int = 16,
    ) -> torch.Tensor:
        """Conditional log-likelihood log p(y|x) in nats per image, (B,).

        Summed over labelled pixels. "importance" draws z from the recognition net (CVAE and
        hybrid), "monte_carlo" from the prior; "auto" takes importance sampling where a
        recognition net exists. Deterministic objectives give their exact value.
        """
        return log_mean_exp(self.log_likelihood_weights(x, y, num_samples, method, chunk_size))

    @torch.no_grad()
    def log_likelihood_weights(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_samples: int = 50,
        method: LikelihoodMethod = "auto",
        chunk_size: int = 16,
    ) -> torch.Tensor:
        """The (S, B) log-weights behind `log_likelihood` (for standard errors); S = 1 for
        deterministic objectives."""
        if method not in ("auto", "importance", "monte_carlo"):
            raise ValueError(
                f"method must be 'auto', 'importance' or 'monte_carlo', got {method!r}"
            )
        if method == "importance" and self.recognition_net is None:
            raise ValueError(
                f"method='importance' needs a recognition net, which objective "
                f"{self.objective!r} does not train; use method='monte_carlo'"
            )
        y = _check_labels(y, x)
        with _inference_mode(self):
            encoded = self._encode(x)

            def log_likelihood_given_z(z: torch.Tensor) -> torch.Tensor:
                logits = self._decode(encoded, z)
                target = y.unsqueeze(0).expand(z.shape[0], *y.shape).flatten(0, 1)
                nll = pixel_nll(logits.flatten(0, 1), target, self.ignore_index)
                return -nll.flatten(1).sum(1).view(z.shape[0], -1)

            if not self.spec.stochastic:
                if not self.spec.uses_latent:
                    nll = pixel_nll(encoded.logits, y, self.ignore_index)
                    return -nll.flatten(1).sum(1).unsqueeze(0)
                return log_likelihood_given_z(encoded.prior.mean.unsqueeze(0))
            if method == "monte_carlo" or self.recognition_net is None:
                return monte_carlo_log_weights(
                    log_likelihood_given_z, encoded.prior, num_samples, chunk_size
                )
            one_hot = one_hot_labels(y, self.num_classes, self.ignore_index)
            posterior = self.recognition_net(torch.cat([x, one_hot], 1))
            return importance_log_weights(
                log_likelihood_given_z, posterior, encoded.prior, num_samples, chunk_size
            )


# --------------------------------------------------------------------------- helpers
def _draw(source: LatentSource, prior: Normal, posterior: Normal | None) -> torch.Tensor:
    if source == "prior_mean":
        return prior.mean
    return (prior if source == "prior" else posterior).rsample()


def _gaussian_kl(q: Normal, p: Normal) -> torch.Tensor:
    """KL(q || p) summed over latent dims, (B,), in float32 so that AMP cannot overflow it."""
    q32 = Normal(q.mean.float(), q.stddev.float())
    p32 = Normal(p.mean.float(), p.stddev.float())
    return kl_divergence(q32, p32).flatten(1).sum(1)


class _inference_mode:
    """Eval mode for the duration of a call, then the caller's mode back (unlike smp's
    `predict`, which leaves the model in eval mode)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


def _first_conv(backbone: nn.Module) -> nn.Conv2d:
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise TypeError(f"backbone {type(backbone).__name__} has no Conv2d to read in_channels from")


def _probe_backbone(model: CVAE, size: int) -> tuple[int, int]:
    """One dry run on zeros: the decoder's channel count and the number of classes."""
    backbone = model.backbone
    parameter = next(backbone.parameters())
    probe = torch.zeros(1, model.in_channels, size, size, device=parameter.device)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            logits, features = model._run_backbone(probe)
    except Exception as error:
        raise RuntimeError(
            f"the dry run of {type(backbone).__name__} on a {size}x{size} input failed ({error}); "
            "pass a probe_size that the architecture accepts"
        ) from error
    finally:
        backbone.train(was_training)
    return features.shape[1], logits.shape[1]


def _check_image(x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"x must be (B, {in_channels}, H, W) images, got shape {tuple(x.shape)}")


def _check_labels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate (B, H, W) integer labels against x; return them as int64."""
    if y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"y must be (B, H, W) labels matching x {tuple(x.shape)}, got shape {tuple(y.shape)}"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    return y.long()
