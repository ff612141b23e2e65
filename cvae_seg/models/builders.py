"""The registry's entries for the models of this package.

One builder per smp architecture (smp's arguments, ``head=`` and the head's arguments),
"sohn2015" (the paper's network with a head) and "mnist_mlp" (the paper's MNIST MLPs under
the training config's argument names). `cvae_seg.models` imports this module, which fills
the registry.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from cvae_seg.checks import integer_at_least
from cvae_seg.models.mnist import QuadrantCVAE
from cvae_seg.models.peers import (
    DeepEnsemble,
    MCDropout,
    ProbabilisticUNet,
    StochasticSegmentationNetwork,
)
from cvae_seg.models.segmentation import SegmentationModel
from cvae_seg.models.smp import CVAE
from cvae_seg.models.sohn2015 import Sohn2015
from cvae_seg.modules.heads import LOGVAR_BOUND
from cvae_seg.registry import register_model

__all__ = [
    "HEADS",
    "SMP_ARCHITECTURES",
    "create_backbone",
    "head_parameters",
    "mnist_mlp",
    "sohn2015",
    "wrap_backbone",
]

SMP_ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus",
    "PAN", "UPerNet", "Segformer", "DPT",
)  # fmt: skip


def create_backbone(
    arch: str,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 2,
    **kwargs: Any,
) -> nn.Module:
    """The plain smp model (``smp.create_model``) with random weights unless told otherwise.

    encoder_weights defaults to None: random initialisation, nothing downloaded, so a build
    works offline and gives the same model everywhere. Any other value is smp's: a name of
    the encoder's pretrained weights ("imagenet", ...) that smp downloads from the network
    (for a "tu-" timm encoder any value but None means timm's pretrained weights, also
    downloaded, so False is refused); it is no path to a local file. An unknown name of an
    smp encoder's weights is refused with smp's list, a failed download with one OSError
    that names encoder_weights. Arguments smp would drop (an smp encoder gets none of the
    unknown ones) are refused with the closest names.
    """
    import segmentation_models_pytorch as smp  # slow import, only when an smp model is built

    classes = integer_at_least("classes", classes)
    in_channels = integer_at_least("in_channels", in_channels)
    _check_smp_arguments(arch, encoder_name, encoder_weights, kwargs)
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **kwargs,
        )
    except TypeError as error:  # smp or timm names an argument none of them takes
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unknown is None:
            raise
        raise TypeError(_unknown_argument(unknown.group(1), arch)) from None
    except (KeyError, RuntimeError) as error:
        # smp: KeyError "Wrong encoder name ..." with every name; timm: "Unknown model (x)";
        # smp: KeyError "Wrong pretrained weights `x` ... Available options are: [...]"
        text = str(error.args[0]) if error.args else ""
        if "Wrong pretrained weights" in text:
            raise ValueError(_unknown_weights(encoder_weights, encoder_name, text)) from None
        if "encoder name" not in text and "Unknown model" not in text:
            raise
        raise ValueError(_unknown_encoder(encoder_name, smp.encoders.get_encoder_names())) from None
    except OSError as error:  # huggingface_hub's download errors (no network, no such file)
        if encoder_weights is None or not type(error).__module__.startswith("huggingface_hub"):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(
            f"encoder_weights={encoder_weights!r}: downloading the pretrained weights of encoder "
            f"{encoder_name!r} failed ({reason}); encoder_weights=None builds it with random "
            "weights, offline"
        ) from error


# names smp's architectures still take through **kwargs, with a deprecation warning (smp
# 0.5-0.6: Unet, UnetPlusPlus, MAnet and Linknet pop decoder_use_batchnorm, PSPNet
# psp_use_batchnorm, PAN upscale_mode); a later one we do not list is refused by name, never
# dropped
_SMP_DEPRECATED_ARGUMENTS = frozenset(
    {"decoder_use_batchnorm", "psp_use_batchnorm", "upscale_mode"}
)


def _check_smp_arguments(
    arch: str, encoder_name: str, encoder_weights: Any, kwargs: dict[str, Any]
) -> None:
    """Refuse what smp would take silently and get wrong.

    smp hands arguments its architecture does not name to the encoder only when the encoder
    is a timm one (which refuses unknown names itself); for its own encoders it drops them,
    so a misspelled argument would build a model without it. And a timm encoder reads any
    encoder_weights other than None, False included, as "download the pretrained weights".
    """
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders import is_equivalent_to_timm_universal

    timm_encoder = encoder_name.startswith("tu-") or is_equivalent_to_timm_universal(encoder_name)
    if timm_encoder and encoder_weights is False:
        raise ValueError(
            f"encoder_weights=False for the timm encoder {encoder_name!r}: smp reads it as "
            "'download the pretrained weights'; give None for random initialisation"
        )
    if timm_encoder:
        return
    arch_names = set(inspect.signature(getattr(smp, arch)).parameters) - {"kwargs"}
    dropped = sorted(set(kwargs) - arch_names - _SMP_DEPRECATED_ARGUMENTS)
    if dropped:
        raise TypeError(
            _unknown_argument(dropped[0], arch)
            + f"; smp passes other arguments only to 'tu-' (timm) encoders, not {encoder_name!r}"
        )


def _unknown_argument(name: str, arch: str) -> str:
    """Say that ``name`` is an argument of neither smp's ``arch`` nor a head, with the
    closest names (smp's own message blames the encoder's or timm's constructor)."""
    import segmentation_models_pytorch as smp

    smp_names = set(inspect.signature(getattr(smp, arch)).parameters) - {"kwargs"}
    close = difflib.get_close_matches(name, sorted(smp_names | ALL_HEAD_PARAMETERS), n=3)
    guess = f" (did you mean {', '.join(close)}?)" if close else ""
    return (
        f"unexpected argument {name!r}{guess}: create_model({arch!r}, ...) takes smp's {arch} "
        "arguments and the head's (help(cvae_seg.HEADS[head]) lists them)"
    )


def _unknown_weights(weights: str, encoder: str, smp_message: str) -> str:
    """Say that ``weights`` names none of the encoder's pretrained weights, with smp's list."""
    options = smp_message.partition("Available options are:")[2].strip() or "none"
    return (
        f"encoder_weights {weights!r} names no pretrained weights of encoder {encoder!r}; "
        f"expected None (random initialisation, no download) or one of {options}, which smp "
        "downloads (network needed); a local weights file is not accepted here"
    )


def _unknown_encoder(name: str, known: list[str]) -> str:
    """Say that ``name`` is no encoder, with the closest smp names and the timm spelling."""
    close = difflib.get_close_matches(name, known, n=3)
    guess = f" (closest: {', '.join(close)})" if close else ""
    return (
        f"encoder_name {name!r} is not an encoder{guess}; expected one of "
        "segmentation_models_pytorch.encoders.get_encoder_names() or 'tu-' and a timm "
        "model name (timm.list_models())"
    )


# the heads `create_model(..., head=...)` puts on a backbone; "cvae" is the paper's
HEADS: dict[str, type[SegmentationModel]] = {
    "cvae": CVAE,
    "probunet": ProbabilisticUNet,
    "ssn": StochasticSegmentationNetwork,
    "mc_dropout": MCDropout,
    "ensemble": DeepEnsemble,
}


def head_parameters(head: str) -> frozenset[str]:
    """The keyword arguments a head takes (an ensemble's ``members`` included)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    named = set(inspect.signature(HEADS[head]).parameters) - {"backbone", "backbones"}
    return frozenset(named | ({"members"} if head == "ensemble" else set()))


ALL_HEAD_PARAMETERS = frozenset().union(*(head_parameters(h) for h in HEADS)) | {"head"}


def wrap_backbone(
    make_backbone: Callable[[], nn.Module] | nn.Module,
    objective: str | None = None,
    kwargs: dict[str, Any] | None = None,
    head: str = "cvae",
) -> SegmentationModel:
    """Put ``head`` on a backbone (``make_backbone()``; an ensemble calls it once per member).

    ``objective`` is the CVAE's (default "cvae"); every peer trains on its own objective.
    Arguments the head does not take are refused by name.
    """
    kwargs = dict(kwargs or {})
    accepted = head_parameters(head) - {"objective"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"unexpected argument(s) {', '.join(unknown)} for the {head!r} head; it "
                        f"takes {', '.join(sorted(accepted))}")  # fmt: skip
    if isinstance(make_backbone, nn.Module):
        backbone = make_backbone
        make_backbone = lambda: backbone  # noqa: E731 (one member: the module given)
    if head == "cvae":
        return CVAE(make_backbone(), objective=objective or "cvae", **kwargs)
    if objective is not None:
        raise ValueError(f"objective={objective!r}: the {head!r} head trains on its own objective; "
                         "objective chooses among the 'cvae' head's")  # fmt: skip
    if head == "ensemble":
        members = kwargs.pop("members", 5)
        members = integer_at_least("members", members, minimum=2)
        return DeepEnsemble([make_backbone() for _ in range(members)], **kwargs)
    return HEADS[head](make_backbone(), **kwargs)


def _smp_builder(arch: str):
    def build(
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 2,
        objective: str | None = None,
        head: str = "cvae",
        **kwargs: Any,
    ) -> SegmentationModel:
        heads = {k: kwargs.pop(k) for k in list(kwargs) if k in ALL_HEAD_PARAMETERS}
        smp_kwargs = dict(encoder_name=encoder_name, encoder_weights=encoder_weights,
                          in_channels=in_channels, classes=classes, **kwargs)  # fmt: skip
        return wrap_backbone(lambda: create_backbone(arch, **smp_kwargs), objective, heads, head)

    build.parameters = ALL_HEAD_PARAMETERS  # what it takes besides smp's arguments
    build.__name__ = build.__qualname__ = arch
    build.__doc__ = f"smp's {arch} with a head (smp's arguments + the head's; default the CVAE)."
    return build


for _arch in SMP_ARCHITECTURES:
    register_model(_arch)(_smp_builder(_arch))


@register_model("sohn2015")
def sohn2015(
    in_channels: int = 3,
    classes: int = 2,
    objective: str | None = None,
    head: str = "cvae",
    **kwargs: Any,
) -> SegmentationModel:
    """The paper's network with a head (default the CVAE); ``kwargs`` are the head's."""
    smp_only = sorted(set(kwargs) & {"encoder_name", "encoder_weights", "encoder_depth"})
    if smp_only:  # else the head would be named as refusing them
        raise TypeError(
            f"sohn2015 is the paper's own network, with no smp encoder: {', '.join(smp_only)} "
            "does not apply (an smp architecture such as 'Unet' takes it)"
        )
    return wrap_backbone(lambda: Sohn2015(in_channels=in_channels, classes=classes), objective,
                         kwargs, head)  # fmt: skip


sohn2015.parameters = ALL_HEAD_PARAMETERS  # what its **kwargs take (`registry.builder_parameters`)


@register_model("mnist_mlp")
def mnist_mlp(
    observed: int = 1,
    objective: str = "cvae",
    latent_channels: int = 200,
    mlp_hidden: tuple[int, ...] = (1000, 1000),
    mlp_dropout: float = 0.0,
    recurrent: bool = True,
    alpha: float = 0.5,
    kl_weight: float = 1.0,
    importance_samples: int = 1,
    elbo_share: float = 0.0,
    logvar_bound: float = LOGVAR_BOUND,
    prior_components: int = 1,
    side: int = 28,
) -> QuadrantCVAE:
    """The paper's MNIST quadrant-completion MLPs, under the training config's names."""
    # zero latents would build and fail only at the first forward pass
    latent_channels = integer_at_least("latent_channels", latent_channels)
    if prior_components != 1:
        raise ValueError(
            f"prior_components={prior_components}: the mixture prior exists for the conv prior "
            "net only; arch 'mnist_mlp' takes 1"
        )
    return QuadrantCVAE(
        observed=observed,
        objective=objective,
        hidden=tuple(mlp_hidden),
        latent_features=latent_channels,
        recurrent=recurrent,
        alpha=alpha,
        kl_weight=kl_weight,
        importance_samples=importance_samples,
        elbo_share=elbo_share,
        logvar_bound=logvar_bound,
        side=side,
        dropout=mlp_dropout,
    )
