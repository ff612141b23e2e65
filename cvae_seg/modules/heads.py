"""The three networks of the CVAE: recognition q(z|x,y), prior p(z|x) and generation p(y|x,z).

The Gaussian nets map an image-sized input to a spatial diagonal Gaussian (mean, log-variance)
at 1/``latent_stride`` resolution. The generation nets turn latent maps into class scores that
the model adds to the backbone's logits. Two generation nets exist:

- :class:`LightGenerationNet` (default): the input-dependent part is computed once per image
  (``prepare``) and each latent sample only adds a cheap low-resolution correction, so drawing
  many samples costs little more than one prediction.
- :class:`Sohn2015GenerationNet`: the paper's decoder (four upsampling conv stages from z
  alone), kept for faithful reproductions; every sample pays the full decoding cost.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from cvae_seg.checks import integer_at_least
from cvae_seg.modules.latent import GaussianMixture

__all__ = [
    "CVAE_LATENT_CHANNELS",
    "LOGVAR_BOUND",
    "GaussianConvNet",
    "GaussianMLP",
    "LightGenerationNet",
    "MLPGenerationNet",
    "Sohn2015GenerationNet",
    "bounded_log_variance",
    "mlp",
    "num_halvings",
    "upsample_bilinear",
]

# log-variances of q and p are squashed into (-LOGVAR_BOUND, LOGVAR_BOUND): the KL stays finite
# under AMP and no std passes exp(3)
LOGVAR_BOUND = 6.0
# channels of the CVAE's latent map by default (the config, CVAE and its Gaussian nets)
CVAE_LATENT_CHANNELS = 32


def num_halvings(stride: int, name: str = "latent_stride") -> int:
    """log2 of a power-of-two stride, with an error that names the argument otherwise."""
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"{name} must be a power of two >= 1, got {stride}")
    return int(math.log2(stride))


def bounded_log_variance(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """Squash a log-variance smoothly into (-bound, bound).

    A hard clamp would stop gradients at the limit; tanh keeps them while guaranteeing that
    exp(log-variance) and the KL stay finite in fp16/bf16.
    """
    return bound * torch.tanh(raw / bound)


class GaussianConvNet(nn.Module):
    """Conv net from an image-sized input to a diagonal Gaussian over a latent map.

    Used for both the recognition net (input ``[x, one-hot y]``) and the prior net (input
    ``[x, y_hat]`` or ``x``). Each stage halves the resolution with a strided convolution;
    ``widths`` gives the channel count of the first stages and the last width repeats for the
    remaining ones. The paper uses widths (64, 96, 128) and kernels (9, 5, 3); by default we
    keep its widths with 3x3 kernels, which are cheaper than the paper's 9x9/5x5 stems
    (docs/benchmarks/speed.md).

    Input (B, in_channels, H, W) -> Normal with mean and scale of shape
    (B, latent_channels, ceil(H / latent_stride), ceil(W / latent_stride)). With
    ``components`` M > 1 (priors only): a `GaussianMixture` of M such Gaussians, its weights
    read from the globally pooled features, the biases of its component means drawn from a
    unit normal so that the components start distinct.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int = CVAE_LATENT_CHANNELS,
        latent_stride: int = 16,
        widths: tuple[int, ...] = (64, 96, 128),
        kernel_sizes: tuple[int, ...] = (3, 3, 3),
        logvar_bound: float = LOGVAR_BOUND,
        components: int = 1,
    ) -> None:
        super().__init__()
        integer_at_least("components", components)
        if not widths:
            raise ValueError("widths must name at least one channel count")
        if len(kernel_sizes) != len(widths):
            raise ValueError(f"kernel_sizes {kernel_sizes} must have one entry per width {widths}")
        stages = max(num_halvings(latent_stride), 1)
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(stages):
            width = widths[min(i, len(widths) - 1)]
            kernel = kernel_sizes[min(i, len(kernel_sizes) - 1)]
            stride = 2 if i < num_halvings(latent_stride) else 1
            layers += [nn.Conv2d(channels, width, kernel, stride, kernel // 2), nn.ReLU(True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.to_params = nn.Conv2d(channels, 2 * components * latent_channels, 3, padding=1)
        self.to_weights = nn.Linear(channels, components) if components > 1 else None
        if components > 1:
            with torch.no_grad():  # the mean biases: component m starts at its own point
                self.to_params.bias[: components * latent_channels].normal_()
        self.latent_channels = latent_channels
        self.components = components
        self.logvar_bound = logvar_bound

    def forward(self, inputs: torch.Tensor) -> Normal | GaussianMixture:
        features = self.body(inputs)
        mean, raw_logvar = self.to_params(features).chunk(2, dim=1)
        std = torch.exp(0.5 * bounded_log_variance(raw_logvar, self.logvar_bound))
        if self.to_weights is None:
            return Normal(mean, std)
        per_component = (self.components, self.latent_channels)
        logits = self.to_weights(features.mean((-2, -1)))
        return GaussianMixture(logits, mean.unflatten(1, per_component),
                               std.unflatten(1, per_component))  # fmt: skip


class LightGenerationNet(nn.Module):
    """Cheap p(y|x,z): image context computed once, a small per-sample correction.

    ``prepare(features, size)`` projects the decoder features to ``hidden`` channels at the
    generation resolution (once per image). ``forward(z, context)`` projects each latent map
    with a 1x1 conv at latent resolution (linear maps commute with bilinear upsampling, so this
    is exact and cheap), upsamples it, adds the context, and applies one 3x3 conv block and a
    1x1 classifier: class scores at the generation resolution for every sample.
    """

    def __init__(
        self, feature_channels: int, latent_channels: int, num_classes: int, hidden: int = 64
    ) -> None:
        super().__init__()
        self.context = nn.Conv2d(feature_channels, hidden, 1)
        self.latent = nn.Conv2d(latent_channels, hidden, 1)
        self.refine = nn.Sequential(
            nn.ReLU(True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def prepare(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.context(resize(features, size))

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """z (S, B, Cz, h, w), context (B, hidden, hg, wg) -> scores (S*B, classes, hg, wg)."""
        samples, batch = z.shape[:2]
        projected = self.latent(z.flatten(0, 1))
        projected = upsample_bilinear(projected, tuple(context.shape[-2:]))
        hidden = projected.unflatten(0, (samples, batch)) + context.unsqueeze(0)
        return self.refine(hidden.flatten(0, 1))


class Sohn2015GenerationNet(nn.Module):
    """The paper's generation net g(z): z alone, upsampled x2 per stage back to full size.

    Paper (128 px inputs, z 32 x 8 x 8): conv 3x3 to 96, up; conv 5x5 to 64, up; conv 5x5 to
    48, up; conv 5x5 to 48, up; conv 5x5 to classes. ``widths`` and ``kernel_sizes`` give the
    stages; their count must equal log2(latent_stride).
    """

    def __init__(
        self,
        latent_channels: int,
        num_classes: int,
        latent_stride: int = 16,
        widths: tuple[int, ...] = (96, 64, 48, 48),
        kernel_sizes: tuple[int, ...] = (3, 5, 5, 5),
        out_kernel_size: int = 5,
    ) -> None:
        super().__init__()
        stages = num_halvings(latent_stride)
        if len(widths) != stages or len(kernel_sizes) != stages:
            raise ValueError(
                f"Sohn2015GenerationNet needs log2(latent_stride)={stages} stages, got widths "
                f"{widths} and kernel_sizes {kernel_sizes}"
            )
        layers: list[nn.Module] = []
        channels = latent_channels
        for width, kernel in zip(widths, kernel_sizes, strict=True):
            layers += [
                nn.Conv2d(channels, width, kernel, padding=kernel // 2),
                nn.ReLU(True),
                nn.Upsample(scale_factor=2, mode="nearest"),
            ]
            channels = width
        layers.append(
            nn.Conv2d(channels, num_classes, out_kernel_size, padding=out_kernel_size // 2)
        )
        self.body = nn.Sequential(*layers)

    def prepare(self, features: torch.Tensor, size: tuple[int, int]) -> None:
        return None  # g depends on z alone in the paper

    def forward(self, z: torch.Tensor, context: None = None) -> torch.Tensor:
        return self.body(z.flatten(0, 1))


def resize(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool down or bilinearly upsample a (N, C, h, w) map to ``size``.

    One rule for every decoder: smp decoders end at full, 1/2, 1/4 or 1/8 resolution, and the
    heads need fixed strides whatever the architecture.
    """
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    if features.shape[-2] >= size[0] and features.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(features, size)
    return upsample_bilinear(features, size)


def upsample_bilinear(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(features, size, mode="bilinear", align_corners=False)``, faster on CPU.

    Why not interpolate itself everywhere: on the CPU its backward scatters pixel by pixel and
    dominated the importance-weighted training step, which upsamples hundreds of latent maps
    per batch. Bilinear upsampling is separable, so here it is two
    small matrix products whose weights come from torch's own 1-D linear interpolation of an
    identity matrix: the same rule, equal to float rounding (tested). Other devices keep
    interpolate.
    """
    if features.device.type != "cpu":
        return F.interpolate(features, size=size, mode="bilinear", align_corners=False)
    rows = _linear_weights(features.shape[-2], size[0], features.dtype)
    cols = _linear_weights(features.shape[-1], size[1], features.dtype)
    return torch.einsum("nchw,hH,wW->ncHW", features, rows, cols)


def _linear_weights(size_in: int, size_out: int, dtype: torch.dtype) -> torch.Tensor:
    """(size_in, size_out): column j holds the weights of output j over the inputs."""
    identity = torch.eye(size_in, dtype=dtype).unsqueeze(0)
    return F.interpolate(identity, size=size_out, mode="linear", align_corners=False)[0]


def _activation(dropout: float) -> list[nn.Module]:
    """What follows every hidden linear layer of the MLPs: a ReLU, then dropout if asked."""
    return [nn.ReLU(True), nn.Dropout(dropout)] if dropout > 0 else [nn.ReLU(True)]


def mlp(sizes: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of these sizes, ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += _activation(dropout)
    return nn.Sequential(*layers)


class GaussianMLP(nn.Module):
    """MLP from a flat input to a diagonal Gaussian over a latent vector (the MNIST nets).

    Input (B, in_features) -> Normal with mean and scale of shape (B, latent_features).
    Paper (MNIST): two hidden layers of 1,000 ReLUs, 200 latents.
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int = 200,
        hidden: tuple[int, ...] = (1000, 1000),
        logvar_bound: float = LOGVAR_BOUND,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = mlp((in_features, *hidden, 2 * latent_features), dropout)
        self.logvar_bound = logvar_bound

    def forward(self, inputs: torch.Tensor) -> Normal:
        mean, raw_logvar = self.body(inputs).chunk(2, dim=-1)
        logvar = bounded_log_variance(raw_logvar, self.logvar_bound)
        return Normal(mean, torch.exp(0.5 * logvar))


class MLPGenerationNet(nn.Module):
    """p(y|x,z) as an MLP on [x, z], its first layer split so that x's part runs once.

    ``prepare(x)`` computes W_x x (once per input); ``forward(z, context)`` adds W_z z for each
    sample and runs the remaining layers: (S, B, latent) -> scores (S*B, out_features).
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int,
        out_features: int,
        hidden: tuple[int, ...] = (1000, 1000),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.context = nn.Linear(in_features, hidden[0])
        self.latent = nn.Linear(latent_features, hidden[0], bias=False)
        self.rest = nn.Sequential(*_activation(dropout), mlp((*hidden, out_features), dropout))

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.context(inputs)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = self.latent(z) + context.unsqueeze(0)
        return self.rest(hidden.flatten(0, 1))
