"""The paper's own convolutional segmentation network (as the authors' released code builds it).

For 128x128 inputs, every convolution 'same' padded with ReLU:
encoder: conv 9x9 stride 2 to 64, pool (32 px); conv 5x5 to 96, pool (16 px); conv 3x3 to 128;
conv 3x3 to 128. decoder: conv 3x3 to 96, up (32 px); conv 5x5 to 64, up (64 px); conv 5x5 to
48, up (128 px). segmentation_head: conv 9x9 to classes.

It exposes the attributes of an smp model, so `cvae_seg.CVAE` wraps it like any other. The
paper's coarse heads sit on intermediate decoder stages; here, as for every smp backbone, the
multi-scale heads read the final decoder features (one mechanism for all architectures).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Sohn2015"]


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2), nn.ReLU(True)]


class Sohn2015(nn.Module):
    """The paper's CNN trunk. Input sides must be multiples of 8 (one stride-2 conv, two pools).

    Input (B, in_channels, H, W) -> logits (B, classes, H, W).
    """

    output_stride = 8

    def __init__(self, in_channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "classes": classes}  # smp's habit: rebuildable
        self.encoder = nn.Sequential(
            *_conv(in_channels, 64, 9, stride=2),
            nn.MaxPool2d(2),
            *_conv(64, 96, 5),
            nn.MaxPool2d(2),
            *_conv(96, 128, 3),
            *_conv(128, 128, 3),
        )
        self.decoder = nn.Sequential(
            *_conv(128, 96, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv(96, 64, 5),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv(64, 48, 5),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )
        self.segmentation_head = nn.Conv2d(48, classes, 9, padding=4)

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise RuntimeError unless both sides of ``x`` are multiples of 8.

        smp models have this method, and `cvae_seg.training.build_model` calls it with a
        tensor of ``data.size`` sides, so a config whose size this network cannot take is
        refused when the model is built, naming ``data.size``, not at the first step.
        """
        height, width = x.shape[-2:]
        stride = self.output_stride
        if height % stride or width % stride:
            raise RuntimeError(
                f"Sohn2015 needs input sides divisible by {stride}, got {height}x{width}; "
                f"resize or pad the input to {-(-height // stride) * stride}x"
                f"{-(-width // stride) * stride}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return self.segmentation_head(self.decoder(self.encoder(x)))
