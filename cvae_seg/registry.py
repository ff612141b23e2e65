"""The one table of model builders: `register_model`, `create_model`, `list_models`.

Every way of building a model goes through this table: `cvae_seg.create_model`,
`cvae_seg.from_pretrained` and the training code. A builder is a function that takes keyword
arguments and returns a `ConditionalGenerativeModel`; `cvae_seg.models` registers one for every
smp architecture, for "sohn2015" and for "mnist_mlp". Names are looked up case-insensitively,
as ``smp.create_model`` does.

This module imports no model: the builders register themselves when `cvae_seg.models` is
imported (``import cvae_seg`` does that), the way timm's registry works.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "builder_parameters",
    "create_model",
    "get_model_builder",
    "is_model",
    "list_models",
    "offline_arguments",
    "register_model",
]

Builder = TypeVar("Builder", bound=Callable[..., Any])

_BUILDERS: dict[str, Callable[..., Any]] = {}
_DISPLAY_NAMES: dict[str, str] = {}
_OFFLINE: dict[str, dict[str, Any]] = {}


def register_model(
    name: str | Callable[..., Any] | None = None, *, offline: Mapping[str, Any] | None = None
) -> Any:
    """Add a builder to the table, under ``name`` or the function's own name.

    >>> @register_model("my_net", offline={"pretrained": False})
    ... def my_net(classes: int = 2, pretrained: bool = True, **kwargs):
    ...     return cvae_seg.CVAE(MyNet(classes, pretrained=pretrained), **kwargs)

    A model built by `create_model` remembers the name and arguments it was built with, so
    `save_pretrained` / `from_pretrained` rebuild it through this builder whenever its
    backbone cannot describe itself (smp models can, and are rebuilt through smp's name).
    ``offline`` names the builder's own switches that fetch weights from the network and the
    values that turn them off. A model saved through its builder's name and arguments (a
    `cvae_seg.CVAE` or peer head whose backbone keeps no config) records those values, so
    that `from_pretrained` rebuilds it without a download that its saved weights would
    replace anyway; smp's ``encoder_weights`` is turned off for every builder unasked. A
    switch the builder's signature does not take is refused here; one passed on through
    ``**kwargs`` cannot be checked. Registering the same builder again keeps its switches
    unless ``offline`` is given.
    """
    if callable(name):  # used bare: @register_model
        return register_model(name.__name__, offline=offline)(name)
    if offline is not None and not isinstance(offline, Mapping):
        raise TypeError(
            f"offline must map a builder's download switches to their off values, e.g. "
            f"{{'pretrained': False}}; got {type(offline).__name__} {offline!r}"
        )

    def add(builder: Builder) -> Builder:
        display = name if name is not None else builder.__name__
        key = display.lower()
        if key in _BUILDERS and _BUILDERS[key] is not builder:
            raise ValueError(f"a model named {display!r} is registered already")
        switches = _OFFLINE.get(key, {}) if offline is None else dict(offline)
        _check_offline_switches(display, builder, switches)
        _BUILDERS[key], _DISPLAY_NAMES[key], _OFFLINE[key] = builder, display, switches
        return builder

    return add


def _check_offline_switches(name: str, builder: Callable[..., Any], switches: dict) -> None:
    """Refuse an ``offline`` switch the builder cannot take: it would fail at every load."""
    if not switches:
        return
    signature = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature):
        return  # passed on to what the builder calls: not known here
    unknown = sorted(set(switches) - {p.name for p in signature})
    if unknown:
        raise ValueError(
            f"register_model({name!r}, offline=...) names {unknown}, which the builder "
            f"{getattr(builder, '__name__', builder)!r} does not take"
        )


def offline_arguments(name: str) -> dict[str, Any]:
    """The values of ``name``'s download switches that fetch nothing (`register_model`'s
    ``offline``); empty for a builder that declared none."""
    return dict(_OFFLINE.get(name.lower(), {}))


def list_models() -> list[str]:
    """The names `create_model` accepts, in registration order."""
    return list(_DISPLAY_NAMES.values())


def is_model(name: str) -> bool:
    """Whether ``name`` is registered (case-insensitive)."""
    return isinstance(name, str) and name.lower() in _BUILDERS


def get_model_builder(name: str) -> Callable[..., Any]:
    """The builder registered under ``name``, with an error that lists the valid names."""
    if not is_model(name):
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    return _BUILDERS[name.lower()]


def builder_parameters(name: str) -> tuple[frozenset[str], bool]:
    """(the keyword arguments the builder of ``name`` names, whether it takes more).

    A builder that forwards ``**kwargs`` can name the ones it knows in a ``parameters``
    attribute (the smp builders name the CVAE heads' arguments this way).
    """
    builder = get_model_builder(name)
    signature = inspect.signature(builder).parameters.values()
    named = {p.name for p in signature if p.kind is not inspect.Parameter.VAR_KEYWORD}
    named |= set(getattr(builder, "parameters", ()))
    takes_more = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature)
    return frozenset(named), takes_more


def create_model(arch: str, **kwargs: Any) -> Any:
    """Build the model registered as ``arch`` with ``kwargs``.

    For an smp architecture the arguments are smp's (``encoder_name``, ``classes``, ...) plus the
    CVAE heads' (``objective``, ``latent_channels``, ...); see `cvae_seg.CVAE`. Encoders start
    from random weights with no download (``encoder_weights=None``, the default); any other
    ``encoder_weights`` is the name of smp's pretrained weights ("imagenet", ...), which smp
    downloads, so it needs the network.

    >>> model = create_model("Unet", encoder_name="resnet18", classes=3, objective="hybrid")
    """
    model = get_model_builder(arch)(**kwargs)
    # what rebuilds it (`SegmentationModel.config`) when its backbone keeps no config, with
    # the backbone it built, so that a backbone swapped in later is not saved under this
    # recipe; an object that takes no new attributes simply goes without
    with contextlib.suppress(AttributeError):
        built = getattr(model, "backbone", None)
        model.registered_as = (_DISPLAY_NAMES[arch.lower()], dict(kwargs), built)
    return model
