"""The paper's MNIST quadrant-completion models as MLPs on the shared CVAE machinery.

x is the observed quadrants' pixels, y the hidden ones, each a Bernoulli on its grey level.
The baseline NN s(x), the prior p(z|x) on [x, sigmoid(2 s(x))] (the same recurrent connection
as the segmentation model), the recognition q(z|x,y) on [x, y] and the generation g(x, z) are
MLPs with two hidden layers of 1,000 ReLUs and 200 Gaussian latents, as in the paper; p(y|x,z)
has logits s(x) + g(x, z). Objectives, sampling and likelihood come from
`ConditionalGenerativeModel`, exactly as for segmentation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvae_seg.models.base import ConditionalGenerativeModel, Encoded
from cvae_seg.modules.heads import LOGVAR_BOUND, GaussianMLP, MLPGenerationNet, mlp
from cvae_seg.quadrants import quadrant_mask

__all__ = ["QuadrantCVAE"]


class QuadrantCVAE(ConditionalGenerativeModel):
    """Complete an MNIST digit from 1, 2 or 3 observed quadrants.

    Input x (B, 1, 28, 28) or (B, 28, 28) images (hidden pixels are ignored); target y the
    whole digit (B, 28, 28) in [0, 1]; outputs are logits of the hidden pixels (B, n_hidden).
    """

    def __init__(
        self,
        observed: int = 1,
        objective: str = "cvae",
        hidden: tuple[int, ...] = (1000, 1000),
        latent_features: int = 200,
        recurrent: bool = True,
        alpha: float = 0.5,
        kl_weight: float = 1.0,
        importance_samples: int = 1,
        elbo_share: float = 0.0,
        logvar_bound: float = LOGVAR_BOUND,
        side: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(objective, alpha, kl_weight, importance_samples, elbo_share)
        # what rebuilds it through the registry (the names of the "mnist_mlp" builder)
        self._config = dict(
            arch="mnist_mlp", observed=observed, objective=objective, mlp_hidden=list(hidden),
            latent_channels=latent_features, recurrent=recurrent, alpha=alpha,
            kl_weight=kl_weight, importance_samples=importance_samples, elbo_share=elbo_share,
            logvar_bound=logvar_bound, side=side, mlp_dropout=dropout,
        )  # fmt: skip
        mask = torch.from_numpy(quadrant_mask(observed, side)).flatten()
        self.register_buffer("observed_mask", mask, persistent=False)
        self.observed = observed
        self.side = side
        self.recurrent = recurrent
        n_in, n_out = int(mask.sum()), int((~mask).sum())
        self.baseline = mlp((n_in, *hidden, n_out), dropout)
        if self.spec.uses_latent:
            self.prior_net = GaussianMLP(
                n_in + (n_out if recurrent else 0), latent_features, hidden, logvar_bound, dropout
            )
            if self.spec.needs_recognition:
                self.recognition_net = GaussianMLP(
                    n_in + n_out, latent_features, hidden, logvar_bound, dropout
                )
            self.generation_net = MLPGenerationNet(n_in, latent_features, n_out, hidden, dropout)

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model: ``cvae_seg.create_model(**model.config)``."""
        return dict(self._config)

    def _flat(self, images: torch.Tensor, name: str) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1)
        if flat.shape[1] != self.side**2:
            raise ValueError(
                f"{name} must be (B, 1, {self.side}, {self.side}) or (B, {self.side}, {self.side}) "
                f"digits, got shape {tuple(images.shape)}"
            )
        return flat

    def hidden_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_hidden) values of the unobserved pixels of whole digits."""
        return self._flat(images, "y")[:, ~self.observed_mask]

    def _encode(self, x: torch.Tensor) -> Encoded:
        observed = self._flat(x, "x")[:, self.observed_mask].float()
        logits = self.baseline(observed)
        prior = context = None
        if self.spec.uses_latent:
            guess = torch.sigmoid(2 * logits)
            prior = self.prior_net(torch.cat([observed, guess], 1) if self.recurrent else observed)
            context = self.generation_net.prepare(observed)
        return Encoded(logits, prior, context, observed)

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        scores = self.generation_net(z, encoded.context)
        return encoded.logits.unsqueeze(0) + scores.unflatten(0, tuple(z.shape[:2]))

    def _target(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is not None and y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} digits but x has {x.shape[0]}")
        hidden = self.hidden_pixels(y).float()
        if hidden.numel() and not bool(((hidden >= 0) & (hidden <= 1)).all()):
            # Bernoulli targets: outside [0, 1] the likelihood is no likelihood at all
            raise ValueError(
                f"y must hold pixel intensities in [0, 1], got values in "
                f"[{hidden.min().item():g}, {hidden.max().item():g}] (uint8 images: divide by 255)"
            )
        return hidden

    def _output_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")

    def _recognition_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._flat(x, "x")[:, self.observed_mask].float(), y], 1)

    def _average_samples(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.logit(torch.sigmoid(samples).mean(0), eps=1e-6)

    def complete_digit(self, x: torch.Tensor, hidden_logits: torch.Tensor) -> torch.Tensor:
        """Whole digits (..., 28, 28): observed pixels from x, hidden ones as probabilities."""
        flat = self._flat(x, "x").float()
        digits = flat.expand(*hidden_logits.shape[:-1], flat.shape[-1]).clone()
        digits[..., ~self.observed_mask] = torch.sigmoid(hidden_logits.float())
        return digits.unflatten(-1, (self.side, self.side))
