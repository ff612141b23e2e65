"""The models: the shared base classes, the CVAE and its peers around smp models, the paper's
networks.

Importing this package registers every builder in `cvae_seg.registry` (one per smp
architecture, "sohn2015" and "mnist_mlp").
"""

from cvae_seg.models.base import ConditionalGenerativeModel, CVAEOutput, Encoded
from cvae_seg.models.builders import HEADS, SMP_ARCHITECTURES, create_backbone
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

__all__ = [
    "CVAE",
    "HEADS",
    "SMP_ARCHITECTURES",
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
    "create_backbone",
]
