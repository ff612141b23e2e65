"""The conditional generative model shared by every architecture.

A `ConditionalGenerativeModel` has a deterministic predictor s(x), a prior net p(z|x), a
recognition net q(z|x,y) and a generation net; p(y|x,z) has logits s(x) + g(x, z). Subclasses
say how to encode an input (`_encode`: s(x), the prior, anything reused by every latent
sample), how to decode latents (`_decode`), and which output distribution scores y
(`_output_nll`): the segmentation model (categorical over classes per pixel) and the MNIST
MLPs (Bernoulli per pixel) share everything else, so "gsnn" or "log_likelihood" mean the same
thing in both.

The public surface follows smp and mmsegmentation: ``model(x)`` returns logits,
``model.loss(x, y)`` the training loss, and the building blocks (`encode`, `prior`,
`posterior`, `decode`, `reconstruction_nll`) are public so that estimators and benchmarks
never reach into the model.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import Normal

from cvae_seg.checks import integer_at_least
from cvae_seg.likelihood import (
    importance_log_weights,
    log_mean_exp,
    monte_carlo_log_weights,
)
from cvae_seg.modules.latent import LatentDistribution, latent_kl, latent_point
from cvae_seg.objectives import (
    ObjectiveSpec,
    draw_latents,
    get_objective,
    importance_weighted_bound,
)

__all__ = ["CVAEOutput", "ConditionalGenerativeModel", "Encoded", "eval_mode"]

LikelihoodMethod = Literal["auto", "importance", "monte_carlo"]
ForwardMode = Literal["tensor", "loss"]


@dataclass
class CVAEOutput:
    """What `ConditionalGenerativeModel.loss` returns.

    ``loss`` is the scalar to backpropagate (negative ELBO per scored output element, plus
    any auxiliary losses); ``terms`` holds its named parts, detached, for logging (``kl`` in
    nats per example); ``logits`` maps a stride (4, 2, 1; 1 = full output) to its logits.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Encoded:
    """Everything computed once per input and shared by all latent samples.

    ``logits`` are the deterministic predictor's s(x); ``prior`` is p(z|x) (None for "cnn");
    ``context`` is what the generation net reuses across samples; ``features`` what the
    auxiliary heads read.
    """

    logits: torch.Tensor
    prior: LatentDistribution | None
    context: Any = None
    features: Any = None


def _check_objective_arguments(
    alpha: float, kl_weight: float, importance_samples: int, elbo_share: float
) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    integer_at_least("importance_samples", importance_samples)
    if not 0.0 <= elbo_share <= 1.0:
        raise ValueError(f"elbo_share must be in [0, 1], got {elbo_share}")
    if elbo_share > 0 and importance_samples == 1:
        raise ValueError(
            f"elbo_share={elbo_share} mixes the k-sample ELBO into the importance-weighted "
            "bound, which needs importance_samples > 1 (with k = 1 both are the ELBO)"
        )


class ConditionalGenerativeModel(nn.Module):
    """Base class: one objective from `cvae_seg.objectives`, three optional latent nets.

    Args:
        objective: "cnn", "gdnn", "gsnn", "cvae" or "hybrid".
        alpha: the hybrid's weight of the CVAE term.
        kl_weight: extra factor on the KL (1 is the ELBO).
        importance_samples: k > 1 trains the recognition term on the k-sample
            importance-weighted bound (`cvae_seg.objectives.importance_weighted_bound`).
        elbo_share: with k > 1, the share of the k-sample ELBO mixed into that bound (CIWAE).
    """

    head_name = "cvae"  # the peers (`cvae_seg.models.peers`) name their own
    prior_net: nn.Module | None
    recognition_net: nn.Module | None
    generation_net: nn.Module | None

    def __init__(
        self,
        objective: str,
        alpha: float,
        kl_weight: float,
        importance_samples: int = 1,
        elbo_share: float = 0.0,
    ) -> None:
        super().__init__()
        _check_objective_arguments(alpha, kl_weight, importance_samples, elbo_share)
        self.spec: ObjectiveSpec = get_objective(objective)
        self.objective = objective
        self.alpha = alpha
        self.kl_weight = kl_weight
        self.importance_samples = importance_samples
        self.elbo_share = elbo_share
        self.prior_net = self.recognition_net = self.generation_net = None

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model: ``cvae_seg.create_model(**model.config)``."""
        raise NotImplementedError(f"{type(self).__name__} does not describe how to rebuild it")

    def save_pretrained(self, directory: str | os.PathLike, **card: Any) -> Path:
        """Save config.json, model.safetensors and a model card (see `cvae_seg.hub`)."""
        from cvae_seg.hub import save_pretrained  # hub imports no model: no cycle

        return save_pretrained(self, directory, **card)

    # ------------------------------------------------------------ hooks for subclasses
    def _encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, *latent) -> logits (S, B, *output) of p(y|x,z)."""
        raise NotImplementedError

    def _target(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The user's y, validated (against x when given) and in the form `_output_nll` scores."""
        return y

    def _output_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-element -log p(y|logits), 0 where y is unscored; shape (N, *y.shape[1:])."""
        raise NotImplementedError

    def _scored(self, y: torch.Tensor) -> torch.Tensor:
        """Number of scored output elements per example, (B,)."""
        return torch.full((y.shape[0],), y[0].numel(), device=y.device, dtype=torch.float32)

    def _recognition_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _auxiliary_losses(
        self, encoded: Encoded, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, torch.Tensor]]:
        """Extra losses that do not involve z (multi-scale heads); none by default."""
        return encoded.logits.new_zeros(()), {}, {}

    def _average_samples(self, samples: torch.Tensor) -> torch.Tensor:
        """Logits of the mean of p(y|x,z_s) over samples (S, B, ...)."""
        raise NotImplementedError

    @property
    def _full_weight(self) -> float:
        return 1.0

    # ------------------------------------------------------------ public building blocks
    def encode(self, x: torch.Tensor) -> Encoded:
        """Run the deterministic predictor and the prior net once: an `Encoded`."""
        return self._encode(x)

    def prior(self, x: torch.Tensor) -> LatentDistribution:
        """p(z|x): a diagonal Gaussian (or a mixture) with sample, rsample and log_prob."""
        self._require_latent("prior")
        return self._encode(x).prior

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> Normal:
        """q(z|x,y), the recognition net's diagonal Gaussian (the cvae and hybrid objectives
        and the probunet head have one)."""
        if self.recognition_net is None:
            raise ValueError(
                f"this model (objective {self.objective!r}, head {self.head_name!r}) trains no "
                "recognition net q(z|x,y); the cvae and hybrid objectives and the probunet "
                "head do"
            )
        return self.recognition_net(self._recognition_input(x, self._target(y, x)))

    def decode(self, encoded: Encoded | torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits (S, B, ...) of p(y|x,z) for latents z (S, B, *latent).

        ``encoded`` is what `encode` returned (reuse it across calls), or the input x itself.
        """
        self._require_latent("decode")
        if isinstance(encoded, torch.Tensor):
            encoded = self._encode(encoded)
        batch = self._batch_size(encoded)
        if z.ndim < 2 or z.shape[1] != batch:
            raise ValueError(
                f"z must be (S, B, *latent) with B = {batch} inputs, got shape {tuple(z.shape)}"
            )
        return self._decode(encoded, z)

    def reconstruction_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log p(y|x,z) per example, (N,), for decoded logits (N, ...) and targets y (N, ...).

        Summed over scored output elements (``ignore_index`` pixels count nothing).
        """
        return self._output_nll(logits, self._target(y)).flatten(1).sum(1)

    @property
    def likelihood_method(self) -> str:
        """How `log_likelihood` with method="auto" estimates log p(y|x): "importance",
        "monte_carlo" or "exact"."""
        if not self.spec.stochastic:
            return "exact"
        return "importance" if self.recognition_net is not None else "monte_carlo"

    def _batch_size(self, encoded: Encoded) -> int:
        """How many inputs ``encoded`` holds (heads that stack logits say otherwise)."""
        return encoded.logits.shape[0]

    def _require_latent(self, what: str) -> None:
        if not self.spec.uses_latent:
            raise ValueError(f"objective {self.objective!r} has no latent variable ({what})")

    # ------------------------------------------------------------ training
    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, mode: ForwardMode | None = None
    ) -> CVAEOutput | torch.Tensor:
        """``model(x)``: the deterministic prediction's logits, as an smp model returns them.

        ``model(x, y, mode="loss")`` is `loss` called through forward (what DDP needs).
        ``model(x, y)`` without a mode is the 0.x spelling of it, kept for one release.
        """
        if mode is None and y is not None:
            warnings.warn(
                "model(x, y) is deprecated and will be removed in cvae_seg 1.1; call "
                "model.loss(x, y) (or model(x, y, mode='loss') through a wrapper such as DDP)",
                FutureWarning,
                stacklevel=2,
            )
            mode = "loss"
        if mode in (None, "tensor"):
            return self._deterministic_logits(self._encode(x))
        if mode != "loss":
            raise ValueError(f"mode must be 'tensor' or 'loss', got {mode!r}")
        if y is None:
            raise ValueError("mode='loss' needs the targets y")
        return self.loss(x, y)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> CVAEOutput:
        """The objective's training loss for inputs x and targets y, with its named terms."""
        y = self._target(y, x)
        encoded = self._encode(x)
        loss, terms, logits = self._auxiliary_losses(encoded, y)
        scored = self._scored(y).sum().clamp_min(1)
        if self.spec.uses_latent:
            latent_loss, logits[1] = self._latent_loss(x, y, encoded, scored, terms)
        else:
            terms["nll"] = self._example_nll(encoded.logits, y).sum() / scored
            latent_loss, logits[1] = self._full_weight * terms["nll"], encoded.logits
        terms["loss"] = loss = loss + latent_loss
        return CVAEOutput(loss, {k: v.detach() for k, v in terms.items()}, logits)

    def _latent_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        encoded: Encoded,
        scored: torch.Tensor,
        terms: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's reconstruction terms (and KL): loss, full-resolution logits."""
        posterior = None
        if self.spec.needs_recognition:
            posterior = self.recognition_net(self._recognition_input(x, y))
        sources = self.spec.terms(self.alpha)
        weighted = self.importance_samples > 1 and posterior is not None
        counts = [self.importance_samples if weighted and src == "posterior" else 1
                  for src, _ in sources]  # fmt: skip
        # one latent tensor per source (the weighted bound hooks the posterior's own)
        drawn = [draw_latents(src, encoded.prior, posterior, n)
                 for (src, _), n in zip(sources, counts, strict=True)]  # fmt: skip
        decoded = self._decode(encoded, torch.cat(drawn))
        loss = decoded.new_zeros(())
        for (source, weight), source_z, source_logits in zip(
            sources, drawn, decoded.split(counts), strict=True
        ):
            n = len(source_z)
            targets = y if n == 1 else y.repeat(n, *([1] * (y.ndim - 1)))
            example_nll = self._example_nll(source_logits.flatten(0, 1), targets).view(n, -1)
            terms[f"nll_{source}"] = example_nll.mean(0).sum() / scored
            term = terms[f"nll_{source}"]
            if source == "posterior" and weighted:
                bound = importance_weighted_bound(
                    example_nll, source_z, encoded.prior, posterior, self.kl_weight,
                    self.elbo_share,
                )  # fmt: skip
                term = terms["iw_bound"] = -bound.sum() / scored
            loss = loss + self._full_weight * weight * term
        kl_share = self.spec.kl_weight(self.alpha)
        if kl_share > 0:  # (B,) nats; a mixture prior's is estimated at q's samples
            posterior_z = drawn[[src for src, _ in sources].index("posterior")]
            # the weighted bound holds its own KL: then this one is only logged
            with torch.set_grad_enabled(torch.is_grad_enabled() and not weighted):
                kl = latent_kl(posterior, encoded.prior, posterior_z)
            terms["kl"] = kl.mean()
            if not weighted:
                loss = loss + kl_share * self.kl_weight * kl.sum() / scored
        return loss, decoded[0]

    # ------------------------------------------------------------ shared computation
    def _deterministic_logits(self, encoded: Encoded) -> torch.Tensor:
        """s(x) for the CNN, s(x) + g(E[z|x]) otherwise: the paper's prediction."""
        if not self.spec.uses_latent:
            return encoded.logits
        return self._decode(encoded, latent_point(encoded.prior).unsqueeze(0))[0]

    def _example_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log p(y|x,z) per example for targets already in `_target` form: (N,)."""
        return self._output_nll(logits, y).flatten(1).sum(1)

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        x: torch.Tensor,
        method: Literal["mean", "average"] = "mean",
        num_samples: int = 16,
    ) -> torch.Tensor:
        """Deterministic prediction's logits, in eval mode without gradients.

        "mean" decodes the prior mean (the paper's tables); "average" returns logits of
        p(y|x,z) averaged over ``num_samples`` prior samples.
        """
        if method not in ("mean", "average"):
            raise ValueError(f"method must be 'mean' or 'average', got {method!r}")
        num_samples = integer_at_least("num_samples", num_samples)
        with eval_mode(self):
            encoded = self._encode(x)
            if method == "mean" or not self.spec.stochastic:
                return self._deterministic_logits(encoded)
            return self._average_samples(self._sample(encoded, num_samples))

    @torch.no_grad()
    def sample(self, x: torch.Tensor, num_samples: int = 16) -> torch.Tensor:
        """Logits of ``num_samples`` plausible outputs, (S, B, ...).

        The deterministic part and the prior run once; all latents are decoded as one batch.
        Deterministic objectives (cnn, gdnn) return S identical outputs.
        """
        num_samples = integer_at_least("num_samples", num_samples)
        with eval_mode(self):
            return self._sample(self._encode(x), num_samples)

    def _sample(self, encoded: Encoded, num_samples: int) -> torch.Tensor:
        if not self.spec.stochastic:
            logits = self._deterministic_logits(encoded)
            return logits.unsqueeze(0).expand(num_samples, *logits.shape)
        return self._decode(encoded, encoded.prior.sample((num_samples,)))

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_samples: int = 50,
        method: LikelihoodMethod = "auto",
        chunk_size: int = 16,
    ) -> torch.Tensor:
        """Conditional log-likelihood log p(y|x) in nats per example, (B,).

        Summed over scored output elements. "importance" draws z from the recognition net
        (cvae, hybrid), "monte_carlo" from the prior; "auto" takes importance sampling where
        a recognition net exists. Deterministic objectives give their exact value.
        """
        return log_mean_exp(self.log_likelihood_weights(x, y, num_samples, method, chunk_size))

    def _check_likelihood_method(self, method: str) -> None:
        if method not in ("auto", "importance", "monte_carlo"):
            raise ValueError(
                f"method must be 'auto', 'importance' or 'monte_carlo', got {method!r}"
            )
        if method == "importance" and self.recognition_net is None:
            raise ValueError(
                f"method='importance' needs a recognition net, which objective "
                f"{self.objective!r} does not train; use method='monte_carlo'"
            )

    @torch.no_grad()
    def log_likelihood_weights(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_samples: int = 50,
        method: LikelihoodMethod = "auto",
        chunk_size: int = 16,
    ) -> torch.Tensor:
        """The (S, B) log-weights behind `log_likelihood` (for standard errors); S = 1 for
        deterministic objectives."""
        self._check_likelihood_method(method)
        y = self._target(y, x)
        with eval_mode(self):
            encoded = self._encode(x)

            def log_likelihood_given_z(z: torch.Tensor) -> torch.Tensor:
                logits = self._decode(encoded, z)
                target = y.unsqueeze(0).expand(z.shape[0], *y.shape).flatten(0, 1)
                return -self._example_nll(logits.flatten(0, 1), target).view(z.shape[0], -1)

            if not self.spec.stochastic:
                return -self._example_nll(self._deterministic_logits(encoded), y).unsqueeze(0)
            if method == "monte_carlo" or self.recognition_net is None:
                return monte_carlo_log_weights(
                    log_likelihood_given_z, encoded.prior, num_samples, chunk_size
                )
            posterior = self.recognition_net(self._recognition_input(x, y))
            return importance_log_weights(
                log_likelihood_given_z, posterior, encoded.prior, num_samples, chunk_size
            )


class eval_mode:
    """Eval mode for the duration of a call, then the caller's modes back (unlike smp's
    `predict`, which leaves the model in eval mode). Every submodule's own mode is restored,
    not only the top one's: a model trained with a frozen encoder (its BatchNorm layers in
    eval mode) keeps it frozen."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.modes = [(child, child.training) for child in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        for child, training in self.modes:
            child.training = training
