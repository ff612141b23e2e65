"""cvae_seg: conditional VAE heads (Sohn, Lee, Yan, NIPS 2015) for segmentation-models-pytorch.

>>> import cvae_seg
>>> model = cvae_seg.create_model("Unet", encoder_name="resnet18", classes=3, objective="cvae")
>>> out = model(x, y); out.loss.backward()          # training
>>> samples = model.sample(x, num_samples=16)       # (S, B, C, H, W) logits
>>> ll = model.log_likelihood(x, y)                 # (B,) nats per image
"""

from cvae_seg import metrics, transforms
from cvae_seg.conditional import ConditionalGenerativeModel, CVAEOutput
from cvae_seg.factory import create_backbone, create_model
from cvae_seg.hub import from_pretrained
from cvae_seg.model import CVAE
from cvae_seg.objectives import OBJECTIVES

__version__ = "0.1.0"

__all__ = [
    "CVAE",
    "OBJECTIVES",
    "CVAEOutput",
    "ConditionalGenerativeModel",
    "__version__",
    "create_backbone",
    "create_model",
    "from_pretrained",
    "metrics",
    "transforms",
]
