"""The models users pick instead of the CVAE, as heads on any smp backbone.

``cvae_seg.create_model(arch, ..., head=...)`` builds them; each is a `SegmentationModel`,
so ``predict``, ``sample``, ``log_likelihood``, save/load and the tools work as for the CVAE.
Each casts its randomness as a latent z with a prior p(z|x), so that sampling and the Monte
Carlo likelihood come from the shared machinery:

- "probunet" (Kohl et al. 2018): a global Gaussian latent from prior and posterior nets,
  tiled over the last decoder features and mixed in by 1x1 convolutions; trained on its
  beta-ELBO (``kl_weight`` is beta). log p(y|x) by importance sampling with its posterior.
- "ssn" (Monteiro et al. 2020): a low-rank plus diagonal Gaussian over the logits themselves,
  z = the logit map; trained on the Monte Carlo estimate of log p(y|x) with
  ``train_samples`` draws. log p(y|x) by Monte Carlo over the logit distribution.
- "mc_dropout" (Gal and Ghahramani 2016): channel dropout on the last decoder features,
  z = the keep mask; trained as usual (one mask per step), sampled with dropout on.
  log p(y|x) by Monte Carlo over masks.
- "ensemble" (Lakshminarayanan et al. 2017): M backbones trained side by side, z = which
  member; log p(y|x) is the exact mixture, log mean_m p(y|x, member m). Members trained
  apart, each in its own run, join with ``DeepEnsemble.from_models``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, LowRankMultivariateNormal

from cvae_seg.checks import integer_at_least
from cvae_seg.likelihood import log_mean_exp
from cvae_seg.models.base import CVAEOutput, Encoded, LikelihoodMethod, eval_mode
from cvae_seg.models.segmentation import SegmentationModel, describe_backbone
from cvae_seg.modules.heads import LOGVAR_BOUND, upsample_bilinear
from cvae_seg.modules.peer_nets import (
    PROBUNET_LATENT_CHANNELS,
    GlobalGaussianNet,
    KeepMask,
    LatentCombiner,
)

__all__ = [
    "DeepEnsemble",
    "MCDropout",
    "ProbabilisticUNet",
    "StochasticSegmentationNetwork",
]


class ProbabilisticUNet(SegmentationModel):
    """The Probabilistic U-Net's heads on any smp backbone.

    Args:
        backbone: an smp model; its decoder features feed the combiner, its segmentation
            head makes the logits.
        latent_channels: dimensions of the global latent (the paper's default is 6).
        encoder_widths: the prior and posterior nets' strided stages.
        combiner_layers: 1x1 convolutions that mix the latent into the features.
        kl_weight: beta of the beta-ELBO.
    """

    head_name = "probunet"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        latent_channels: int = PROBUNET_LATENT_CHANNELS,
        encoder_widths: tuple[int, ...] = (32, 64, 128, 192),
        combiner_layers: int = 3,
        kl_weight: float = 1.0,
        ignore_index: int | None = None,
        logvar_bound: float = LOGVAR_BOUND,
        probe_size: int = 128,
    ) -> None:
        latent_channels = integer_at_least("latent_channels", latent_channels)
        super().__init__(backbone, "cvae", kl_weight=kl_weight, ignore_index=ignore_index,
                         probe_size=probe_size)  # fmt: skip
        self.head_config = dict(
            latent_channels=latent_channels, encoder_widths=tuple(encoder_widths),
            combiner_layers=combiner_layers, kl_weight=kl_weight, ignore_index=ignore_index,
            logvar_bound=logvar_bound, probe_size=probe_size,
        )  # fmt: skip
        widths = tuple(encoder_widths)
        self.prior_net = GlobalGaussianNet(self.in_channels, latent_channels, widths, logvar_bound)
        self.recognition_net = GlobalGaussianNet(
            self.in_channels + self.num_classes, latent_channels, widths, logvar_bound
        )
        self.generation_net = LatentCombiner(
            self.feature_channels, latent_channels, combiner_layers
        )

    def _encode(self, x: torch.Tensor) -> Encoded:
        self._check_input(x)
        logits, features = self._run_backbone(x)
        return Encoded(logits, self.prior_net(x), None, features)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        combined = self.generation_net(encoded.features, z)
        return self.backbone.segmentation_head(combined).unflatten(0, tuple(z.shape[:2]))


class StochasticSegmentationNetwork(SegmentationModel):
    """Stochastic Segmentation Networks: a low-rank Gaussian over the logit map.

    The mean is the backbone's logits; the covariance factor (``rank`` columns per class
    and pixel) and the diagonal come from 1x1 convolutions on the decoder features.

    Args:
        rank: the covariance factor's rank (the paper uses 10).
        train_samples: logit maps drawn per image for the training loss (the paper's 20).
        min_variance: added to the diagonal, so that the covariance stays invertible.
        antithetic: draw the training maps in pairs mirrored about the mean, as the paper's
            code does (a lower-variance gradient); ``train_samples`` must then be even. Off by
            default: the published runs drew them independently.
    """

    head_name = "ssn"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        rank: int = 10,
        train_samples: int = 20,
        min_variance: float = 1e-5,
        antithetic: bool = False,
        ignore_index: int | None = None,
        probe_size: int = 128,
    ) -> None:
        rank = integer_at_least("rank", rank)
        train_samples = integer_at_least("train_samples", train_samples)
        if antithetic and train_samples % 2:
            raise ValueError(f"antithetic=True draws mirrored pairs: train_samples must be even, "
                             f"got {train_samples}")  # fmt: skip
        super().__init__(backbone, "gsnn", ignore_index=ignore_index, probe_size=probe_size)
        self.head_config = dict(rank=rank, train_samples=train_samples, min_variance=min_variance,
                                antithetic=antithetic, ignore_index=ignore_index,
                                probe_size=probe_size)  # fmt: skip
        self.rank, self.train_samples, self.min_variance = rank, train_samples, min_variance
        self.antithetic = antithetic
        self.factor_head = nn.Conv2d(self.feature_channels, self.num_classes * rank, 1)
        self.diagonal_head = nn.Conv2d(self.feature_channels, self.num_classes, 1)

    def _encode(self, x: torch.Tensor) -> Encoded:
        self._check_input(x)
        logits, features = self._run_backbone(x)
        size = tuple(logits.shape[-2:])
        factor, diagonal = self.factor_head(features), self.diagonal_head(features)
        if tuple(features.shape[-2:]) != size:
            factor, diagonal = upsample_bilinear(factor, size), upsample_bilinear(diagonal, size)
        batch = logits.shape[0]
        # (B, C * rank, H, W) -> (B, C * H * W, rank), matching logits.flatten(1)
        factor = factor.unflatten(1, (self.num_classes, self.rank)).movedim(2, -1)
        prior = LowRankMultivariateNormal(
            logits.flatten(1).float(),
            factor.reshape(batch, -1, self.rank).float(),
            torch.nn.functional.softplus(diagonal.flatten(1).float()) + self.min_variance,
        )
        return Encoded(logits, prior, None, features)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        return z.view(*z.shape[:2], *encoded.logits.shape[1:]).to(encoded.logits.dtype)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> CVAEOutput:
        """-log of the Monte Carlo mean of p(y|eta) over ``train_samples`` logit maps."""
        y = self._target(y, x)
        encoded = self._encode(x)
        logits = self._decode(encoded, self._training_maps(encoded.prior))
        targets = y.repeat(self.train_samples, *([1] * (y.ndim - 1)))
        example_nll = self._example_nll(logits.flatten(0, 1), targets).view(self.train_samples, -1)
        loss = -log_mean_exp(-example_nll).sum() / self._scored(y).sum().clamp_min(1)
        return CVAEOutput(loss, {"nll_mc": loss.detach(), "loss": loss.detach()}, {1: logits[0]})

    def _training_maps(self, logits: LowRankMultivariateNormal) -> torch.Tensor:
        """(train_samples, B, C * H * W) reparameterised logit maps; with ``antithetic`` the
        second half mirrors the first about the mean."""
        if not self.antithetic:
            return logits.rsample((self.train_samples,))
        offsets = logits.rsample((self.train_samples // 2,)) - logits.mean
        return torch.cat([offsets, -offsets]) + logits.mean


class MCDropout(SegmentationModel):
    """The backbone with channel dropout on its last decoder features, kept on to sample.

    Args:
        dropout: the probability of dropping a feature channel.
    """

    head_name = "mc_dropout"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        dropout: float = 0.5,
        ignore_index: int | None = None,
        probe_size: int = 128,
    ) -> None:
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1), got {dropout}")
        super().__init__(backbone, "gsnn", ignore_index=ignore_index, probe_size=probe_size)
        self.head_config = dict(dropout=dropout, ignore_index=ignore_index, probe_size=probe_size)
        self.dropout = dropout

    def _encode(self, x: torch.Tensor) -> Encoded:
        self._check_input(x)
        logits, features = self._run_backbone(x)
        keep = features.new_full((*features.shape[:2], 1, 1), 1.0 - self.dropout)
        return Encoded(logits, KeepMask(probs=keep), None, features)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        # the mask's mean keeps every channel: the deterministic network, as in eval mode
        kept = encoded.features.unsqueeze(0) * z / (1.0 - self.dropout)
        return self.backbone.segmentation_head(kept.flatten(0, 1)).unflatten(0, z.shape[:2])


class DeepEnsemble(SegmentationModel):
    """M backbones of one architecture, trained side by side from different initialisations.

    Args:
        backbones: the members (``create_model(..., head="ensemble", members=M)`` builds them).
    """

    head_name = "ensemble"

    def __init__(
        self,
        backbones: Sequence[nn.Module],
        *,
        ignore_index: int | None = None,
        probe_size: int = 128,
    ) -> None:
        if len(backbones) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(backbones)}")
        super().__init__(backbones[0], "gsnn", ignore_index=ignore_index, probe_size=probe_size)
        self.head_config = dict(members=len(backbones), ignore_index=ignore_index,
                                probe_size=probe_size)  # fmt: skip
        self.other_members = nn.ModuleList(backbones[1:])

    @classmethod
    def from_models(
        cls, models: Sequence[nn.Module], *, ignore_index: int | None = None
    ) -> DeepEnsemble:
        """An ensemble of models trained apart, each in its own run with its own seed (the
        usual deep ensemble; ``head="ensemble"`` trains its members side by side instead).

        Each member is an smp model or a cvae_seg model whose prediction is its backbone's
        own (the CVAE head with the "cnn" objective); its backbone is taken as it is, not
        copied. All must share one architecture, so that the ensemble saves and reloads.
        ``ignore_index`` defaults to the first cvae_seg member's.
        """
        backbones = [_member_backbone(model, index) for index, model in enumerate(models)]
        described = [describe_backbone(backbone) for backbone in backbones]
        for index, description in enumerate(described[1:], start=1):
            if description != described[0]:
                raise ValueError(
                    f"models[{index}] is {description[0]} {description[1]}, models[0] is "
                    f"{described[0][0]} {described[0][1]}: an ensemble's members share one "
                    "architecture"
                )
        if ignore_index is None:
            firsts = [m.ignore_index for m in models if isinstance(m, SegmentationModel)]
            ignore_index = firsts[0] if firsts else None
        return cls(backbones, ignore_index=ignore_index)

    def _encode(self, x: torch.Tensor) -> Encoded:
        self._check_input(x)
        logits, features = self._run_backbone(x)
        every = torch.stack([logits, *(_logits(m(x)) for m in self.other_members)])
        uniform = Categorical(logits=every.new_zeros(x.shape[0], len(every)))
        return Encoded(every, uniform, None, features)

    def _batch_size(self, encoded: Encoded) -> int:
        return encoded.logits.shape[1]  # the members' logits are stacked first: (M, B, ...)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        """Member indices (S, B) -> their logits (S, B, C, H, W)."""
        batch = torch.arange(z.shape[1], device=z.device)
        return encoded.logits[z, batch]

    def _deterministic_logits(self, encoded: Encoded) -> torch.Tensor:
        return self._average_samples(encoded.logits)

    @property
    def likelihood_method(self) -> str:
        return "exact"  # the mixture over members is summed, not sampled

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> CVAEOutput:
        """The members' cross-entropies, averaged: each member trains on every batch."""
        y = self._target(y, x)
        every = self._encode(x).logits
        members = len(every)
        targets = y.repeat(members, *([1] * (y.ndim - 1)))
        nll = self._example_nll(every.flatten(0, 1), targets).sum() / members
        loss = nll / self._scored(y).sum().clamp_min(1)
        return CVAEOutput(loss, {"nll": loss.detach(), "loss": loss.detach()}, {1: every[0]})

    @torch.no_grad()
    def log_likelihood_weights(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_samples: int = 50,
        method: LikelihoodMethod = "auto",
        chunk_size: int = 16,
    ) -> torch.Tensor:
        """(M, B) log p(y|x, member m): their log-mean-exp is the exact log p(y|x), whatever
        ``num_samples`` and ``chunk_size`` (the members are summed, not sampled); ``method`` is
        checked as for every model."""
        self._check_likelihood_method(method)
        y = self._target(y, x)
        with eval_mode(self):
            every = self._encode(x).logits
        targets = y.repeat(len(every), *([1] * (y.ndim - 1)))
        return -self._example_nll(every.flatten(0, 1), targets).view(len(every), -1)


def _member_backbone(model: nn.Module, index: int) -> nn.Module:
    """The backbone that predicts for ``model`` (`DeepEnsemble.from_models`'s member)."""
    if not isinstance(model, SegmentationModel):
        return model  # an smp model: SegmentationModel's checks name what it lacks
    if model.head_name != "cvae" or model.spec.uses_latent:
        raise ValueError(
            f"models[{index}] is a {model.head_name!r} head with objective {model.objective!r}: "
            "its prediction is not its backbone's own; an ensemble member is an smp model or "
            "a cvae_seg model trained with the 'cnn' objective"
        )
    return model.backbone


def _logits(output: torch.Tensor | tuple | list) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output
