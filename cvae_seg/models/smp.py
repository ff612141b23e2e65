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

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from cvae_seg.likelihood import log_mean_exp
from cvae_seg.models.base import ConditionalGenerativeModel, Encoded, inference_mode
from cvae_seg.modules.heads import (
    LOGVAR_BOUND,
    GaussianConvNet,
    LightGenerationNet,
    Sohn2015GenerationNet,
    upsample_bilinear,
)
from cvae_seg.modules.multiscale import (
    MultiScaleHeads,
    one_hot_labels,
    pixel_nll,
    soft_coarse_targets,
    soft_nll,
)
from cvae_seg.objectives import get_objective
from cvae_seg.registry import is_model

__all__ = ["CVAE", "HEAD_ARGUMENTS"]


class CVAE(ConditionalGenerativeModel):
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
        super().__init__(objective, alpha, kl_weight, importance_samples, elbo_share)
        _check_head_arguments(backbone, objective, arguments)
        self.head_config = arguments  # with the backbone's config: what rebuilds the model
        self.backbone = backbone
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
        if self.spec.uses_latent:
            self._build_latent_nets(feature_channels, arguments)

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

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model: ``cvae_seg.create_model(**model.config)``.

        The backbone is described by its class name and its ``config`` (the constructor
        arguments that smp models keep); its weights come from the saved file, never a download.
        """
        arch, backbone_kwargs = _describe_backbone(self.backbone)
        return {"arch": arch, **backbone_kwargs, "objective": self.objective, **self.head_config}

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

    def _encode(self, x: torch.Tensor) -> Encoded:
        _check_image(x, self.in_channels, self._weight_dtype())
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

    def _weight_dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def _target(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is not None:
            _check_image(x, self.in_channels, self._weight_dtype())
        return _check_labels(y, x, self.num_classes, self.ignore_index)

    def _output_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pixel_nll(logits, y, self.ignore_index)

    def _scored(self, y: torch.Tensor) -> torch.Tensor:
        if self.ignore_index is None:
            return super()._scored(y)
        return (y != self.ignore_index).flatten(1).sum(1).float()

    def _recognition_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, one_hot_labels(y, self.num_classes, self.ignore_index)], 1)

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

    def _average_samples(self, samples: torch.Tensor) -> torch.Tensor:
        """Log of the mean class probabilities (log-probabilities serve as logits)."""
        return log_mean_exp(torch.log_softmax(samples, dim=2), dim=0)

    @property
    def _full_weight(self) -> float:
        return self.scale_weights[2]

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
        y = self._target(y, x)
        if observed.shape != y.shape or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a bool mask of shape {tuple(y.shape)}, got "
                f"{observed.dtype} {tuple(observed.shape)}"
            )
        with inference_mode(self):
            encoded = self._encode(x)
            logits = self._deterministic_logits(encoded)
            if self.recognition_net is None:
                return logits
            for _ in range(num_iterations):
                current = torch.where(observed, y, logits.argmax(1))
                posterior = self.recognition_net(self._recognition_input(x, current))
                z = posterior.mean if latent == "mean" else posterior.sample()
                logits = self._decode(encoded, z.unsqueeze(0))[0]
            return logits


# the CVAE's own keyword arguments (everything but the backbone); what `config` records
HEAD_ARGUMENTS = frozenset(inspect.signature(CVAE).parameters) - {"backbone", "objective"}


# --------------------------------------------------------------------------- helpers
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


def _check_head_arguments(backbone: nn.Module, objective: str, arguments: dict[str, Any]) -> None:
    if not hasattr(backbone, "segmentation_head"):
        raise TypeError(
            f"backbone {type(backbone).__name__} has no `segmentation_head`; expected an "
            "smp model (smp.create_model) or a cvae_seg architecture"
        )
    scale_weights = arguments["scale_weights"]
    if len(scale_weights) != 3 or min(scale_weights) < 0:
        raise ValueError(
            f"scale_weights must be three non-negative weights for strides (4, 2, 1), got "
            f"{scale_weights}"
        )
    for name in ("latent_channels", "latent_stride", "generation_hidden", "generation_stride",
                 "prior_components", "probe_size"):  # fmt: skip
        if not isinstance(arguments[name], int) or arguments[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {arguments[name]!r}")
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


def _describe_backbone(backbone: nn.Module) -> tuple[str, dict[str, Any]]:
    """(registered name, constructor arguments) of a backbone that keeps its ``config``."""
    arch = type(backbone).__name__
    kwargs = getattr(backbone, "config", None)
    if not is_model(arch) or not isinstance(kwargs, Mapping):
        raise ValueError(
            f"backbone {arch} cannot be rebuilt from a config: its class is not a registered "
            f"model (cvae_seg.list_models()) or keeps no `config` of its constructor arguments "
            f"(smp models do); register a builder with @cvae_seg.register_model, or save "
            f"model.state_dict() yourself"
        )
    kwargs = dict(kwargs)
    if "encoder_weights" in kwargs:
        kwargs["encoder_weights"] = None  # the saved weights replace any pretrained ones
    return arch, kwargs


def _check_image(x: torch.Tensor, in_channels: int, weight_dtype: torch.dtype) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be (B, {in_channels}, H, W) images, got {shape}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point image tensor, got {x.dtype}; convert uint8 images "
            "with x.float() / 255 (and normalise them as in training)"
        )
    if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"x is {x.dtype} but the model's weights are {weight_dtype}; convert with "
            f"x.to({weight_dtype}) (or the model with model.to({x.dtype}))"
        )


def _check_labels(
    y: torch.Tensor, x: torch.Tensor | None, classes: int, ignore_index: int | None
) -> torch.Tensor:
    """Validate (B, H, W) integer labels (against x when given); return them as int64."""
    if not isinstance(y, torch.Tensor) or y.ndim != 3:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be (B, H, W) class labels, got {shape}")
    if x is not None and (y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]):
        raise ValueError(
            f"y must be (B, H, W) labels matching x {tuple(x.shape)}, got shape {tuple(y.shape)}"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    y = y.long()
    valid = (y >= 0) & (y < classes)
    if ignore_index is not None:
        valid |= y == ignore_index
    if not bool(valid.all()):
        bad = y[~valid]
        raise ValueError(
            f"y holds {bad.numel()} label(s) outside 0..{classes - 1} (ignore_index "
            f"{ignore_index}), e.g. {int(bad[0])}; the model was built with classes={classes}"
        )
    return y
