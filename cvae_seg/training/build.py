"""Build the model that a run config describes, through the registry.

The config's ``model`` section holds the arguments of every builder at once (the conv models'
and the MNIST MLPs'); the registered builder's signature says which of them apply. A key set
away from its default that the builder does not take is an error naming it, so a config never
silently ignores a setting.
"""

from __future__ import annotations

from typing import Any

import torch

from cvae_seg.config import Config
from cvae_seg.models import ConditionalGenerativeModel
from cvae_seg.models.builders import ALL_HEAD_PARAMETERS, head_parameters
from cvae_seg.registry import builder_parameters, is_model, list_models
from cvae_seg.registry import create_model as create_registered_model

__all__ = ["build_model", "model_kwargs"]


def model_kwargs(config: Config, num_classes: int) -> dict[str, Any]:
    """The registered builder's keyword arguments for ``config`` and a data set's classes."""
    model = config.model
    if not is_model(model.arch):
        raise ValueError(f"model.arch: unknown model {model.arch!r}; expected one of "
                         f"{', '.join(list_models())}")  # fmt: skip
    # what the data set decides, passed where the builder takes it
    candidates: dict[str, Any] = {
        "in_channels": 3,
        "classes": num_classes,
        "ignore_index": config.data.ignore_index,
        "observed": config.data.mnist_observed,
    }
    settings = model.model_dump(exclude={"arch", "backbone_kwargs"})
    accepted, takes_more = builder_parameters(model.arch)
    if "head" in accepted:  # a builder of heads: only the chosen head's arguments apply
        accepted = (accepted - ALL_HEAD_PARAMETERS) | head_parameters(model.head) | {"head"}
    defaults = type(model)().model_dump()
    for key in settings:
        if key not in accepted and settings[key] != defaults[key]:
            # a key of another head is the head's mismatch, not the architecture's
            owner = f"head {model.head!r}" if "head" in accepted and key in ALL_HEAD_PARAMETERS \
                else f"arch {model.arch!r}"  # fmt: skip
            raise ValueError(f"model.{key} does not apply to {owner}; it takes "
                             f"{', '.join(sorted(accepted))}")  # fmt: skip
    if model.backbone_kwargs and not takes_more:
        raise ValueError(f"model.backbone_kwargs: arch {model.arch!r} takes no extra arguments")
    kwargs = {k: v for k, v in {**candidates, **settings}.items() if k in accepted}
    return {**kwargs, **model.backbone_kwargs}


def build_model(config: Config, num_classes: int) -> ConditionalGenerativeModel:
    """The model that a config describes, for a data set of ``num_classes`` classes."""
    kwargs = model_kwargs(config, num_classes)
    try:
        model = create_registered_model(config.model.arch, **kwargs)
    except (TypeError, ValueError) as error:  # say that the model section of the config is wrong
        raise ValueError(f"model (arch {config.model.arch!r}): {error}") from error
    _check_input_size(model, config)
    return model


def _check_input_size(model: ConditionalGenerativeModel, config: Config) -> None:
    """Refuse a data.size that the smp architecture cannot take (most need a multiple of
    their output stride; smp 0.6's Unet takes any side) now, rather than at the first batch
    with smp's RuntimeError."""
    check = getattr(getattr(model, "backbone", None), "check_input_shape", None)
    if check is None:
        return
    size = config.data.size
    try:
        check(torch.empty(1, 1, size, size, device="meta"))  # reads the shape alone
    except RuntimeError as error:
        raise ValueError(
            f"data.size={size}: arch {config.model.arch!r} cannot take it ({error})"
        ) from None
