"""Building blocks of the peer heads (`cvae_seg.models.peers`).

- `GlobalGaussianNet`: the Probabilistic U-Net's prior and posterior nets, a conv encoder
  averaged over the whole image into one diagonal Gaussian over a few latent dimensions.
- `LatentCombiner`: its "fcomb", the latent tiled over the decoder features and mixed in by
  1x1 convolutions; the backbone's own segmentation head then makes the logits.
- `KeepMask`: MC dropout's noise as a latent variable, a Bernoulli "keep" mask per feature
  channel whose mean (keep every channel, scaled) is the deterministic network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Bernoulli, Normal

from cvae_seg.checks import integer_at_least
from cvae_seg.modules.heads import LOGVAR_BOUND, bounded_log_variance

__all__ = ["PROBUNET_LATENT_CHANNELS", "GlobalGaussianNet", "KeepMask", "LatentCombiner"]

# the global latent's dimensions in Kohl et al. (2018); the CVAE's latent map has its own
PROBUNET_LATENT_CHANNELS = 6


class GlobalGaussianNet(nn.Module):
    """Image (B, in_channels, H, W) -> Normal over (B, latent_channels, 1, 1).

    Each width is one strided 3x3 convolution with ReLU; the features are averaged over the
    image, as the Probabilistic U-Net's prior and posterior nets do, so any input size works.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        logvar_bound: float = LOGVAR_BOUND,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one channel count")
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU(True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.to_params = nn.Conv2d(channels, 2 * latent_channels, 1)
        self.logvar_bound = logvar_bound

    def forward(self, inputs: torch.Tensor) -> Normal:
        pooled = self.body(inputs).mean((-2, -1), keepdim=True)
        mean, raw_logvar = self.to_params(pooled).chunk(2, dim=1)
        return Normal(mean, torch.exp(0.5 * bounded_log_variance(raw_logvar, self.logvar_bound)))


class LatentCombiner(nn.Module):
    """Decoder features (B, C, h, w) and latents (S, B, Cz, 1, 1) -> features (S * B, C, h, w).

    The latent is tiled over the map, joined to the features and mixed by ``layers`` 1x1
    convolutions (ReLU between them), keeping the features' width so that the backbone's
    segmentation head reads them as it reads its own decoder's.
    """

    def __init__(self, feature_channels: int, latent_channels: int, layers: int = 3) -> None:
        super().__init__()
        integer_at_least("layers", layers)
        blocks: list[nn.Module] = []
        channels = feature_channels + latent_channels
        for i in range(layers):
            blocks.append(nn.Conv2d(channels, feature_channels, 1))
            if i < layers - 1:
                blocks.append(nn.ReLU(True))
            channels = feature_channels
        self.body = nn.Sequential(*blocks)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        samples = z.shape[0]
        tiled = z.expand(*z.shape[:3], *features.shape[-2:]).flatten(0, 1)
        repeated = features.unsqueeze(0).expand(samples, *features.shape).flatten(0, 1)
        return self.body(torch.cat([repeated, tiled], 1))


class KeepMask(Bernoulli):
    """A Bernoulli keep-mask that also answers `rsample` (with a plain sample).

    The mask's probabilities are fixed, not learnt, so there is no gradient to carry through
    the draw; the objectives' code asks every latent distribution for `rsample`.
    """

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.sample(sample_shape)
