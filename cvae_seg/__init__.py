"""cvae_seg: conditional VAE heads (Sohn, Lee, Yan, NIPS 2015) for segmentation-models-pytorch.

>>> import cvae_seg
>>> model = cvae_seg.create_model("Unet", encoder_name="resnet18", classes=3, objective="cvae")
>>> model.loss(x, y).loss.backward()                # training
>>> logits = model(x)                               # (B, C, H, W), like an smp model
>>> samples = model.sample(x, num_samples=16)       # (S, B, C, H, W) logits
>>> ll = model.log_likelihood(x, y)                 # (B,) nats per image

The submodules `transforms` (albumentations) and `metrics` load on first use, so that
``import cvae_seg`` stays light and never touches the network.
"""

import importlib
from typing import Any

from cvae_seg.hub import from_pretrained, save_pretrained
from cvae_seg.models import (
    CVAE,
    HEADS,
    ConditionalGenerativeModel,
    CVAEOutput,
    DeepEnsemble,
    Encoded,
    MCDropout,
    ProbabilisticUNet,
    QuadrantCVAE,
    SegmentationModel,
    Sohn2015,
    StochasticSegmentationNetwork,
    create_backbone,
)
from cvae_seg.objectives import OBJECTIVES
from cvae_seg.registry import create_model, list_models, register_model
from cvae_seg.version import __version__

__all__ = [
    "CVAE",
    "HEADS",
    "OBJECTIVES",
    "CVAEOutput",
    "ConditionalGenerativeModel",
    "DeepEnsemble",
    "Encoded",
    "MCDropout",
    "ProbabilisticUNet",
    "QuadrantCVAE",
    "SegmentationModel",
    "Sohn2015",
    "StochasticSegmentationNetwork",
    "__version__",
    "create_backbone",
    "create_model",
    "from_pretrained",
    "list_models",
    "metrics",
    "register_model",
    "save_pretrained",
    "transforms",
]

_LAZY_SUBMODULES = ("metrics", "transforms")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"cvae_seg.{name}")
    raise AttributeError(f"module 'cvae_seg' has no attribute {name!r}")
