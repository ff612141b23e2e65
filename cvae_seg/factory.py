"""`create_model`: smp's factory, with the CVAE heads on top."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from cvae_seg.architectures import Sohn2015
from cvae_seg.model import CVAE

__all__ = ["create_model"]

# Architectures of our own, next to everything smp.create_model knows.
_OWN_ARCHITECTURES = {"sohn2015": Sohn2015}
_CVAE_ARGUMENTS = set(inspect.signature(CVAE).parameters) - {"backbone", "objective"}


def create_backbone(
    arch: str,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 2,
    **kwargs: Any,
) -> nn.Module:
    """The plain segmentation model: "sohn2015" or any name smp.create_model accepts.

    encoder_weights defaults to None (random initialisation): cvae_seg never downloads.
    """
    if arch.lower() in _OWN_ARCHITECTURES:
        if kwargs:
            raise TypeError(f"{arch} takes only in_channels and classes, got {sorted(kwargs)}")
        return _OWN_ARCHITECTURES[arch.lower()](in_channels=in_channels, classes=classes)
    import segmentation_models_pytorch as smp  # slow import, only when an smp model is asked for

    return smp.create_model(
        arch,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        **kwargs,
    )


def create_model(
    arch: str,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 2,
    objective: str = "cvae",
    **kwargs: Any,
) -> CVAE:
    """Build a CVAE like ``smp.create_model``: arch and encoder as in smp, heads as in CVAE.

    Keyword arguments that `CVAE` takes (latent_channels, alpha, scale_weights, ...) go to the
    heads; the rest go to the backbone's constructor.

    >>> model = create_model("Unet", encoder_name="resnet18", classes=3, objective="hybrid")
    """
    all_kwargs = dict(kwargs)
    cvae_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CVAE_ARGUMENTS}
    backbone = create_backbone(arch, encoder_name, encoder_weights, in_channels, classes, **kwargs)
    model = CVAE(backbone, objective=objective, **cvae_kwargs)
    # what save_pretrained writes to rebuild it (weights come from the file, never a download)
    model.build_spec = {
        "builder": "create_model",
        "kwargs": dict(arch=arch, encoder_name=encoder_name, encoder_weights=None,
                       in_channels=in_channels, classes=classes, objective=objective, **all_kwargs),
    }  # fmt: skip
    return model
