"""`SegmentationModel`: what every model around an smp backbone shares, whatever its head.

The user's model stays intact as ``model.backbone``. One backbone pass gives the decoder
features d (the input of its ``segmentation_head``, caught with a forward hook, which works
whatever the decoder's call signature) and the logits s(x). The heads (the paper's CVAE and
the peers in `cvae_seg.models.peers`) differ in what they put on top; they share the input
checks, the categorical p(y|x,z) per pixel with ``ignore_index``, the one-hot recognition
input and the description that saves and rebuilds them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from cvae_seg.checks import integer_at_least
from cvae_seg.likelihood import log_mean_exp
from cvae_seg.models.base import ConditionalGenerativeModel, eval_mode
from cvae_seg.modules.multiscale import one_hot_labels, pixel_nll
from cvae_seg.registry import is_model, offline_arguments

__all__ = ["SegmentationModel", "check_image", "check_labels"]


class SegmentationModel(ConditionalGenerativeModel):
    """Base class of the heads around an smp backbone: categorical p(y|x,z) per pixel.

    Subclasses set ``head_name`` (their name in ``create_model(..., head=...)``) and
    ``head_config`` (their own constructor arguments), and implement `_encode` / `_decode`.
    """

    head_config: dict[str, Any]

    def __init__(
        self,
        backbone: nn.Module,
        objective: str,
        *,
        alpha: float = 0.5,
        kl_weight: float = 1.0,
        importance_samples: int = 1,
        elbo_share: float = 0.0,
        ignore_index: int | None = None,
        probe_size: int = 128,
    ) -> None:
        super().__init__(objective, alpha, kl_weight, importance_samples, elbo_share)
        if not hasattr(backbone, "segmentation_head"):
            raise TypeError(
                f"backbone {type(backbone).__name__} has no `segmentation_head`; expected an "
                "smp model (smp.create_model) or a cvae_seg architecture"
            )
        probe_size = integer_at_least("probe_size", probe_size)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise TypeError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        _check_raw_logits(backbone)
        self.backbone = backbone
        self.ignore_index = ignore_index
        self.in_channels = _first_conv(backbone).in_channels
        self.feature_channels, self.num_classes = _probe_backbone(self, probe_size)
        if self.num_classes < 2:
            raise ValueError(
                "the backbone predicts 1 class; cvae_seg models a categorical p(y|x,z): build "
                "the backbone with classes=2 for binary segmentation"
            )
        if ignore_index is not None and 0 <= ignore_index < self.num_classes:
            warnings.warn(
                f"ignore_index={ignore_index} is one of the classes 0..{self.num_classes - 1}: "
                "its pixels are neither trained on nor scored (255 is the usual label of "
                "unlabelled pixels)",
                UserWarning,
                stacklevel=3,
            )

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model: ``cvae_seg.create_model(**model.config)``.

        The backbone is described by its class name and its ``config`` (the constructor
        arguments that smp models keep); failing that, by the registered builder and arguments
        `cvae_seg.create_model` built the whole model with, as long as the backbone is still
        the one it built. Its weights come from the saved file: smp's pretrained encoder
        weights (``encoder_weights``) are not fetched again, nor what a builder's own
        download switches fetch (``register_model(..., offline=...)``).
        """
        try:
            arch, backbone_kwargs = describe_backbone(self.backbone)
        except ValueError:
            name, kwargs, built = getattr(self, "registered_as", (None, None, None))
            if name is None or built is not self.backbone:
                raise
            return {"arch": name, **_without_download(kwargs), **offline_arguments(name)}
        # the default head goes unnamed, so builders of CVAEs alone need no `head` argument;
        # a peer trains on its own objective, so only the CVAE names one
        if self.head_name == "cvae":
            head = {"objective": self.objective}
        else:
            head = {"head": self.head_name}
        return {"arch": arch, **backbone_kwargs, **head, **self.head_config}

    # ----------------------------------------------------------------- shared computation
    def _run_backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits s(x), decoder features d) of one backbone pass."""
        return run_backbone(self.backbone, x)

    def _check_input(self, x: torch.Tensor) -> None:
        check_image(x, self.in_channels, next(self.backbone.parameters()).dtype)

    def _target(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is not None:
            self._check_input(x)
        return check_labels(y, x, self.num_classes, self.ignore_index)

    def _output_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pixel_nll(logits, y, self.ignore_index)

    def _scored(self, y: torch.Tensor) -> torch.Tensor:
        if self.ignore_index is None:
            return super()._scored(y)
        return (y != self.ignore_index).flatten(1).sum(1).float()

    def _recognition_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, one_hot_labels(y, self.num_classes, self.ignore_index)], 1)

    def _average_samples(self, samples: torch.Tensor) -> torch.Tensor:
        """Log of the mean class probabilities (log-probabilities serve as logits)."""
        return log_mean_exp(torch.log_softmax(samples, dim=2), dim=0)

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
        num_iterations = integer_at_least("num_iterations", num_iterations, minimum=0)
        y = self._target(y, x)
        if observed.shape != y.shape or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a bool mask of shape {tuple(y.shape)}, got "
                f"{observed.dtype} {tuple(observed.shape)}"
            )
        with eval_mode(self):
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


# --------------------------------------------------------------------------- helpers
def run_backbone(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the input of ``backbone.segmentation_head``) of one forward pass."""
    captured: list[torch.Tensor] = []
    hook = backbone.segmentation_head.register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0])
    )
    try:
        logits = backbone(x)
    finally:
        hook.remove()
    if isinstance(logits, tuple | list):  # smp models with aux_params return (masks, labels)
        logits = logits[0]
    return logits, captured[-1]


def _check_raw_logits(backbone: nn.Module) -> None:
    """Refuse a backbone whose segmentation head ends in an activation (smp's ``activation=``):
    the heads read its output as logits, and probabilities read as logits train and score
    a different model without any error."""
    from segmentation_models_pytorch.base.modules import Activation  # slow import

    for module in backbone.segmentation_head.modules():
        if isinstance(module, Activation) and not isinstance(module.activation, nn.Identity):
            raise ValueError(
                f"the backbone's segmentation_head ends in {module.activation}; cvae_seg needs "
                "raw logits: build the smp model with activation=None (apply softmax to what "
                "the model returns instead)"
            )


def _first_conv(backbone: nn.Module) -> nn.Conv2d:
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise TypeError(f"backbone {type(backbone).__name__} has no Conv2d to read in_channels from")


def _probe_backbone(model: SegmentationModel, size: int) -> tuple[int, int]:
    """One dry run on zeros: the decoder's channel count and the number of classes."""
    backbone = model.backbone
    parameter = next(backbone.parameters())
    probe = torch.zeros(1, model.in_channels, size, size, device=parameter.device)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            logits, features = run_backbone(backbone, probe)
    except Exception as error:
        raise RuntimeError(
            f"the dry run of {type(backbone).__name__} on a {size}x{size} input failed ({error}); "
            "pass a probe_size that the architecture accepts"
        ) from error
    finally:
        backbone.train(was_training)
    return features.shape[1], logits.shape[1]


def describe_backbone(backbone: nn.Module) -> tuple[str, dict[str, Any]]:
    """(registered name, constructor arguments) of a backbone that keeps its ``config``."""
    arch = type(backbone).__name__
    kwargs = getattr(backbone, "config", None)
    if not is_model(arch) or not isinstance(kwargs, Mapping):
        raise ValueError(
            f"backbone {arch} cannot be rebuilt from a config: its class is not a registered "
            f"model (cvae_seg.list_models()) or keeps no `config` of its constructor arguments "
            f"(smp models do); build the model with cvae_seg.create_model from a builder "
            f"registered with @cvae_seg.register_model (its name and arguments are saved), or "
            f"save model.state_dict() yourself"
        )
    return arch, _without_download(kwargs)


def _without_download(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments with no pretrained weights to fetch: the saved weights replace them."""
    kwargs = dict(kwargs)
    if "encoder_weights" in kwargs:
        kwargs["encoder_weights"] = None
    return kwargs


def check_image(x: torch.Tensor, in_channels: int, weight_dtype: torch.dtype) -> None:
    """Refuse what is not a (B, in_channels, H, W) float batch of the weights' dtype."""
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
    if not torch.isfinite(x).all():  # else torch's Normal refuses a NaN mean, tensor dumped
        raise ValueError("x holds NaN or infinite values; expected finite, normalised images")


def check_labels(
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
