"""CVAE: the paper's conditional generative heads around any smp encoder-decoder model.

On top of the backbone's logits s(x) and decoder features d (`SegmentationModel`):

- prior net p(z|x) on [x, softmax(2 s(x))] (the paper's recurrent connection) or on x;
- recognition net q(z|x,y) on [x, one-hot y], only for objectives that train with it;
- generation net: p(y|x,z) = softmax(s(x) + g(d, z)) at full resolution;
- multi-scale heads at 1/4 and 1/2 resolution on d, trained with soft coarse targets.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Literal

import torch
from torch import nn

from cvae_seg.checks import integer_at_least, integers_at_least
from cvae_seg.models.base import Encoded
from cvae_seg.models.segmentation import SegmentationModel
from cvae_seg.modules.heads import (
    CVAE_LATENT_CHANNELS,
    LOGVAR_BOUND,
    GaussianConvNet,
    LightGenerationNet,
    Sohn2015GenerationNet,
    upsample_bilinear,
)
from cvae_seg.modules.multiscale import (
    MultiScaleHeads,
    one_hot_labels,
    soft_coarse_targets,
    soft_nll,
)
from cvae_seg.objectives import get_objective

__all__ = ["CVAE", "HEAD_ARGUMENTS"]


class CVAE(SegmentationModel):
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
        importance_samples: k > 1 trains the recognition term on the importance-weighted
            bound with k samples of q (tighter than the ELBO; k decodes per image).
        elbo_share: with k > 1, the share of the k-sample ELBO mixed into that bound
            (CIWAE): its gradient keeps q a posterior where k prior samples would do. Use
            it with ``prior_components`` > 1 (docs/benchmarks/known_truth.md says why).
        scale_weights: loss weights at strides (4, 2, 1); (0, 0, 1) turns multi-scale off.
        ignore_index: label of unlabelled pixels, excluded from every loss and likelihood.
        logvar_bound: log-variances are squashed into (-bound, bound).
        prior_components: M > 1 makes p(z|x) a mixture of M Gaussians (`cvae_seg.modules.latent`),
            which can hold separated modes; 1 is the paper's Gaussian.
        probe_size: side of the zero image used once to learn the decoder's width.
    """

    def __init__(
        self,
        backbone: nn.Module,
        objective: str = "cvae",
        *,
        latent_channels: int = CVAE_LATENT_CHANNELS,
        latent_stride: int = 16,
        gaussian_widths: tuple[int, ...] = (64, 96, 128),
        gaussian_kernel_sizes: tuple[int, ...] = (3, 3, 3),
        generation: Literal["light", "sohn2015"] = "light",
        generation_hidden: int = 64,
        generation_stride: int = 4,
        recurrent: bool = True,
        alpha: float = 0.5,
        kl_weight: float = 1.0,
        importance_samples: int = 1,
        elbo_share: float = 0.0,
        scale_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        ignore_index: int | None = None,
        logvar_bound: float = LOGVAR_BOUND,
        prior_components: int = 1,
        probe_size: int = 128,
    ) -> None:
        arguments = {k: tuple(v) if isinstance(v, list) else v  # JSON gives lists back
                     for k, v in locals().items() if k in HEAD_ARGUMENTS}  # fmt: skip
        _check_head_arguments(objective, arguments)
        _warn_unused_arguments(objective, arguments)
        super().__init__(
            backbone, objective, alpha=alpha, kl_weight=kl_weight,
            importance_samples=importance_samples, elbo_share=elbo_share,
            ignore_index=ignore_index, probe_size=probe_size,
        )  # fmt: skip
        self.head_config = arguments  # with the backbone's config: what rebuilds the model
        self.recurrent = recurrent
        self.scale_weights = tuple(float(w) for w in scale_weights)
        self.generation_stride = generation_stride
        coarse = tuple(s for s, w in zip((4, 2), self.scale_weights[:2], strict=True) if w > 0)
        self.multiscale_heads = MultiScaleHeads(self.feature_channels, self.num_classes, coarse)
        if self.spec.uses_latent:
            self._build_latent_nets(self.feature_channels, arguments)

    def _build_latent_nets(self, feature_channels: int, arguments: dict[str, Any]) -> None:
        """The prior, recognition (cvae, hybrid) and generation nets."""
        latent_channels, latent_stride = arguments["latent_channels"], arguments["latent_stride"]
        gaussian = dict(
            latent_channels=latent_channels,
            latent_stride=latent_stride,
            widths=tuple(arguments["gaussian_widths"]),
            kernel_sizes=tuple(arguments["gaussian_kernel_sizes"]),
            logvar_bound=arguments["logvar_bound"],
        )
        prior_in = self.in_channels + (self.num_classes if self.recurrent else 0)
        self.prior_net = GaussianConvNet(
            prior_in, components=arguments["prior_components"], **gaussian
        )
        if self.spec.needs_recognition:
            self.recognition_net = GaussianConvNet(self.in_channels + self.num_classes, **gaussian)
        if arguments["generation"] == "light":
            self.generation_net = LightGenerationNet(
                feature_channels, latent_channels, self.num_classes, arguments["generation_hidden"]
            )
        else:
            self.generation_net = Sohn2015GenerationNet(
                latent_channels, self.num_classes, latent_stride
            )

    # ----------------------------------------------------------------- shared computation
    def _encode(self, x: torch.Tensor) -> Encoded:
        self._check_input(x)
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
        return Encoded(logits, prior, context, features)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, Cz, h, w) -> full-resolution logits (S, B, C, H, W)."""
        scores = self.generation_net(z, encoded.context)
        size = encoded.logits.shape[-2:]
        if scores.shape[-2:] != size:
            scores = upsample_bilinear(scores, tuple(size))
        return encoded.logits.unsqueeze(0) + scores.unflatten(0, tuple(z.shape[:2]))

    def _auxiliary_losses(
        self, encoded: Encoded, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, torch.Tensor]]:
        """The coarse heads' cross-entropies against soft coarse targets."""
        loss = encoded.logits.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        logits = self.multiscale_heads(encoded.features, tuple(y.shape[-2:]))
        if logits:
            one_hot = one_hot_labels(y, self.num_classes, self.ignore_index)
        for stride, coarse_logits in logits.items():
            nll = soft_nll(coarse_logits, soft_coarse_targets(one_hot, stride))
            terms[f"nll_x{stride}"] = nll
            loss = loss + self.scale_weights[(4, 2).index(stride)] * nll
        return loss, terms, logits

    @property
    def _full_weight(self) -> float:
        return self.scale_weights[2]


# the CVAE's own keyword arguments (everything but the backbone); what `config` records
HEAD_ARGUMENTS = frozenset(inspect.signature(CVAE).parameters) - {"backbone", "objective"}


# --------------------------------------------------------------------------- helpers
_LATENT_ARGUMENTS = (
    "latent_channels", "latent_stride", "gaussian_widths", "gaussian_kernel_sizes",
    "generation", "generation_hidden", "generation_stride", "recurrent", "logvar_bound",
    "prior_components",
)  # fmt: skip
_RECOGNITION_ARGUMENTS = ("kl_weight", "importance_samples", "elbo_share")


def unused_arguments(objective: str, arguments: dict[str, Any]) -> list[str]:
    """The head arguments set away from their defaults that ``objective`` (and the chosen
    generation net) never reads, as "name=value"."""
    spec = get_objective(objective)
    unused = [] if spec.uses_latent else list(_LATENT_ARGUMENTS)
    if not spec.needs_recognition:
        unused += _RECOGNITION_ARGUMENTS
    if spec.terms(0.0) == spec.terms(1.0) and spec.kl_weight(0.0) == spec.kl_weight(1.0):
        unused.append("alpha")  # only an objective whose weights depend on alpha reads it
    if arguments.get("generation") == "sohn2015":
        unused += ["generation_hidden", "generation_stride"]
    defaults = {name: p.default for name, p in inspect.signature(CVAE).parameters.items()}
    return [f"{name}={arguments[name]!r}" for name in dict.fromkeys(unused)
            if name in arguments and arguments[name] != defaults[name]]  # fmt: skip


def _warn_unused_arguments(objective: str, arguments: dict[str, Any]) -> None:
    """Say which settings have no effect. A warning, not an error: the paper's tables train
    every objective from one config, which sets the latent nets' arguments for all rows."""
    unused = unused_arguments(objective, arguments)
    if unused:
        warnings.warn(
            f"objective {objective!r} (generation {arguments.get('generation')!r}) does not "
            f"use {', '.join(unused)}: ignored",
            UserWarning,
            stacklevel=3,
        )


def _check_head_arguments(objective: str, arguments: dict[str, Any]) -> None:
    scale_weights = arguments["scale_weights"]
    if len(scale_weights) != 3 or min(scale_weights) < 0 or sum(scale_weights) <= 0:
        raise ValueError(
            f"scale_weights must be three non-negative weights for strides (4, 2, 1), not all "
            f"zero (nothing would train), got {scale_weights}"
        )
    for name in ("gaussian_widths", "gaussian_kernel_sizes"):
        integers_at_least(name, arguments[name])  # one per layer
    bound = arguments["logvar_bound"]
    if not isinstance(bound, int | float) or not 0 < bound < math.inf:
        raise ValueError(f"logvar_bound must be a positive number, got {bound!r}")
    for name in ("latent_channels", "latent_stride", "generation_hidden", "generation_stride",
                 "prior_components"):  # fmt: skip
        integer_at_least(name, arguments[name])
    if arguments["prior_components"] > 1 and not get_objective(objective).needs_recognition:
        raise ValueError(
            f"prior_components={arguments['prior_components']} needs an objective with a KL "
            f"term (cvae or hybrid): its weights learn only through log p(z|x), which "
            f"{objective!r} never evaluates"
        )
    if arguments["generation"] not in ("light", "sohn2015"):
        raise ValueError(
            f"generation must be 'light' or 'sohn2015', got {arguments['generation']!r}"
        )
