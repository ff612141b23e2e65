"""Multi-scale prediction objective of the paper: coarse heads and soft coarse targets.

The paper predicts at 1/4, 1/2 and full resolution and adds the cross-entropy of every scale.
Coarse targets are soft: the one-hot label map max-pooled 2x2 once or twice and renormalised
per pixel, so a coarse pixel that covers two classes asks for both. Pixels whose whole window
is unlabelled (ignore_index) count in no loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvae_seg.modules.heads import resize

__all__ = ["MultiScaleHeads", "one_hot_labels", "pixel_nll", "soft_coarse_targets", "soft_nll"]


def one_hot_labels(
    target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, C, H, W) float one-hot; ignored pixels are all zero."""
    if ignore_index is None:
        return F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    labelled = target != ignore_index
    one_hot = F.one_hot(torch.where(labelled, target, 0), num_classes).permute(0, 3, 1, 2)
    return one_hot.float() * labelled.unsqueeze(1)


def soft_coarse_targets(one_hot: torch.Tensor, stride: int) -> torch.Tensor:
    """Max-pool a (B, C, H, W) one-hot map by ``stride`` and renormalise each pixel.

    Max-pooling 2x2 twice equals one 4x4 max-pool, so one call serves any power-of-two
    stride. Sides that do not divide are padded (ceil mode). Fully unlabelled windows stay 0.
    """
    if stride == 1:
        return one_hot
    pooled = F.max_pool2d(one_hot, stride, stride, ceil_mode=True)
    return pooled / pooled.sum(1, keepdim=True).clamp_min(1.0)


def soft_nll(logits: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels that carry any target mass (a scalar)."""
    per_pixel = F.cross_entropy(logits, soft_target, reduction="none")
    labelled = soft_target.sum(1) > 0
    return (per_pixel * labelled).sum() / labelled.sum().clamp_min(1)


def pixel_nll(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None
) -> torch.Tensor:
    """Per-pixel negative log-likelihood (N, H, W), 0 at ignored pixels."""
    return F.cross_entropy(
        logits,
        target,
        reduction="none",
        ignore_index=-100 if ignore_index is None else ignore_index,
    )


class MultiScaleHeads(nn.Module):
    """One light conv classifier per coarse stride, fed with the decoder features.

    Every smp decoder ends at some resolution (full, 1/2, 1/4 or 1/8); the features are pooled
    or upsampled to each head's resolution by one rule (`heads.resize`), so the mechanism is
    the same for every architecture. Coarse heads do not feed the full-resolution output.
    """

    def __init__(
        self,
        feature_channels: int,
        num_classes: int,
        strides: tuple[int, ...] = (4, 2),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.heads = nn.ModuleDict(
            {
                str(s): nn.Conv2d(
                    feature_channels, num_classes, kernel_size, padding=kernel_size // 2
                )
                for s in self.strides
            }
        )

    def forward(
        self, features: torch.Tensor, image_size: tuple[int, int]
    ) -> dict[int, torch.Tensor]:
        """Logits per stride, each of size ceil(image_size / stride)."""
        outputs = {}
        for stride in self.strides:
            size = (-(-image_size[0] // stride), -(-image_size[1] // stride))
            outputs[stride] = self.heads[str(stride)](resize(features, size))
        return outputs
