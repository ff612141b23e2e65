"""The models: the shared base class, the CVAE around smp models, the paper's networks.

Importing this package registers every builder in `cvae_seg.registry` (one per smp
architecture, "sohn2015" and "mnist_mlp").
"""

from cvae_seg.models.base import ConditionalGenerativeModel, CVAEOutput, Encoded
from cvae_seg.models.builders import SMP_ARCHITECTURES, create_backbone
from cvae_seg.models.mnist import QuadrantCVAE
from cvae_seg.models.smp import CVAE
from cvae_seg.models.sohn2015 import Sohn2015

__all__ = [
    "CVAE",
    "SMP_ARCHITECTURES",
    "CVAEOutput",
    "ConditionalGenerativeModel",
    "Encoded",
    "QuadrantCVAE",
    "Sohn2015",
    "create_backbone",
]
