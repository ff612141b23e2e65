"""The registry's entries for the models of this package.

One builder per smp architecture (smp's arguments plus the CVAE heads'), "sohn2015" (the
paper's network with the heads) and "mnist_mlp" (the paper's MNIST MLPs under the training
config's argument names). `cvae_seg.models` imports this module, which fills the registry.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cvae_seg.models.mnist import QuadrantCVAE
from cvae_seg.models.smp import CVAE, HEAD_ARGUMENTS
from cvae_seg.models.sohn2015 import Sohn2015
from cvae_seg.modules.heads import LOGVAR_BOUND
from cvae_seg.registry import register_model

__all__ = ["SMP_ARCHITECTURES", "create_backbone", "mnist_mlp", "sohn2015", "wrap_backbone"]

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

    encoder_weights defaults to None (random initialisation): cvae_seg never downloads.
    """
    import segmentation_models_pytorch as smp  # slow import, only when an smp model is built

    return smp.create_model(
        arch,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        **kwargs,
    )


def wrap_backbone(backbone: nn.Module, objective: str, kwargs: dict[str, Any]) -> CVAE:
    """CVAE(backbone, ...) with the head arguments picked out of ``kwargs``; others refused."""
    unknown = sorted(set(kwargs) - HEAD_ARGUMENTS)
    if unknown:
        raise TypeError(
            f"unexpected argument(s) {', '.join(unknown)} for the CVAE heads; they take "
            f"{', '.join(sorted(HEAD_ARGUMENTS))}"
        )
    return CVAE(backbone, objective=objective, **kwargs)


def _smp_builder(arch: str):
    def build(
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 2,
        objective: str = "cvae",
        **kwargs: Any,
    ) -> CVAE:
        heads = {k: kwargs.pop(k) for k in list(kwargs) if k in HEAD_ARGUMENTS}
        backbone = create_backbone(
            arch, encoder_name, encoder_weights, in_channels, classes, **kwargs
        )
        return wrap_backbone(backbone, objective, heads)

    build.parameters = HEAD_ARGUMENTS  # what it takes besides smp's arguments
    build.__name__ = build.__qualname__ = arch
    build.__doc__ = f"smp's {arch} with the CVAE heads (smp's arguments + `CVAE`'s)."
    return build


for _arch in SMP_ARCHITECTURES:
    register_model(_arch)(_smp_builder(_arch))


@register_model("sohn2015")
def sohn2015(
    in_channels: int = 3, classes: int = 2, objective: str = "cvae", **kwargs: Any
) -> CVAE:
    """The paper's network with the CVAE heads; ``kwargs`` are `cvae_seg.CVAE`'s."""
    return wrap_backbone(Sohn2015(in_channels=in_channels, classes=classes), objective, kwargs)


sohn2015.parameters = HEAD_ARGUMENTS  # what its **kwargs take (`registry.builder_parameters`)


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
