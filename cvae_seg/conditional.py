"""The CVAE machinery shared by every model: objectives, sampling and likelihood.

A `ConditionalGenerativeModel` has a deterministic predictor s(x), a prior net p(z|x), a
recognition net q(z|x,y) and a generation net; p(y|x,z) has logits s(x) + g(x, z). Subclasses
say how to encode an input (`_encode`: s(x), the prior, anything reused by every latent
sample), how to decode latents (`_decode`), and which output distribution scores y
(`_output_nll`): the segmentation model (categorical over classes per pixel) and the MNIST
MLPs (Bernoulli per pixel) share everything else, so "gsnn" or "log_likelihood" mean the same
thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import Normal

from cvae_seg.latent import LatentDistribution, latent_kl, latent_point
from cvae_seg.likelihood import (
    importance_log_weights,
    latent_log_ratio,
    log_mean_exp,
    monte_carlo_log_weights,
)
from cvae_seg.objectives import LatentSource, ObjectiveSpec, get_objective

__all__ = ["CVAEOutput", "ConditionalGenerativeModel", "Encoded"]

LikelihoodMethod = Literal["auto", "importance", "monte_carlo"]


@dataclass
class CVAEOutput:
    """What a training forward returns.

    ``loss`` is the scalar to backpropagate (negative ELBO per scored output element, plus
    any auxiliary losses); ``terms`` holds its named parts, detached, for logging (``kl`` in
    nats per example); ``logits`` maps a stride (4, 2, 1; 1 = full output) to its logits.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Encoded:
    """Everything computed once per input and shared by all latent samples."""

    logits: torch.Tensor  # s(x)
    prior: LatentDistribution | None
    context: Any = None  # whatever the generation net reuses across samples
    features: Any = None  # whatever auxiliary heads read


class ConditionalGenerativeModel(nn.Module):
    """Base class: one objective from `cvae_seg.objectives`, three optional latent nets."""

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
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        if importance_samples < 1:
            raise ValueError(f"importance_samples must be >= 1, got {importance_samples}")
        # > 1: the recognition term trains on the importance-weighted bound with this many
        # samples (Burda et al. 2016) instead of the one-sample ELBO of the paper
        self.importance_samples = importance_samples
        if not 0.0 <= elbo_share <= 1.0:
            raise ValueError(f"elbo_share must be in [0, 1], got {elbo_share}")
        if elbo_share > 0 and importance_samples == 1:
            raise ValueError(
                f"elbo_share={elbo_share} mixes the k-sample ELBO into the importance-weighted "
                "bound, which needs importance_samples > 1 (with k = 1 both are the ELBO)"
            )
        # > 0: that share of the k-sample ELBO is mixed into the weighted bound (CIWAE)
        self.elbo_share = elbo_share
        self.spec: ObjectiveSpec = get_objective(objective)
        self.objective = objective
        self.alpha = alpha
        self.kl_weight = kl_weight
        self.prior_net = self.recognition_net = self.generation_net = None

    build_spec: dict[str, Any] | None = None  # set by the builders; what save_pretrained writes

    def save_pretrained(self, directory: str, **card: Any):
        """Save config.json, model.safetensors and a model card (see `cvae_seg.hub`)."""
        from cvae_seg.hub import save_pretrained

        return save_pretrained(self, directory, **card)

    # ------------------------------------------------------------ hooks for subclasses
    def _encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def _decode(self, encoded: Encoded, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, *latent) -> logits (S, B, *output) of p(y|x,z)."""
        raise NotImplementedError

    def _check_target(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
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

    # ---------------------------------------------------------------------- shared
    def _deterministic_logits(self, encoded: Encoded) -> torch.Tensor:
        """s(x) for the CNN, s(x) + g(E[z|x]) otherwise: the paper's prediction."""
        if not self.spec.uses_latent:
            return encoded.logits
        return self._decode(encoded, latent_point(encoded.prior).unsqueeze(0))[0]

    def _example_nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log p(y|x,z) per example: logits (N, ...), y (N, ...) -> (N,)."""
        return self._output_nll(logits, y).flatten(1).sum(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> CVAEOutput | torch.Tensor:
        """Training: (x, y) -> CVAEOutput. Without y, the deterministic prediction's logits."""
        if y is None:
            return self._deterministic_logits(self._encode(x))
        y = self._check_target(y, x)
        encoded = self._encode(x)
        loss, terms, logits = self._auxiliary_losses(encoded, y)
        scored = self._scored(y).sum().clamp_min(1)

        if not self.spec.uses_latent:
            nll = self._example_nll(encoded.logits, y).sum() / scored
            terms["nll"] = nll
            loss = loss + self._full_weight * nll
            logits[1] = encoded.logits
        else:
            posterior = None
            if self.spec.needs_recognition:
                posterior = self.recognition_net(self._recognition_input(x, y))
            sources = self.spec.terms(self.alpha)
            weighted = self.importance_samples > 1 and posterior is not None
            counts = [self.importance_samples if weighted and src == "posterior" else 1
                      for src, _ in sources]  # fmt: skip
            # one latent tensor per source (the weighted bound hooks the posterior's own)
            drawn = [_draw(src, encoded.prior, posterior, n)
                     for (src, _), n in zip(sources, counts, strict=True)]  # fmt: skip
            z = torch.cat(drawn)
            decoded = self._decode(encoded, z)
            kl_share = self.spec.kl_weight(self.alpha)
            kl = None
            if kl_share > 0:  # (B,) nats; a mixture prior's is estimated at q's samples
                posterior_z = drawn[[src for src, _ in sources].index("posterior")]
                # the weighted bound holds its own KL: then this one is only logged
                with torch.set_grad_enabled(torch.is_grad_enabled() and not weighted):
                    kl = latent_kl(posterior, encoded.prior, posterior_z)
            for (source, weight), source_z, source_logits in zip(
                sources, drawn, decoded.split(counts), strict=True
            ):
                n = len(source_z)
                targets = y if n == 1 else y.repeat(n, *([1] * (y.ndim - 1)))
                example_nll = self._example_nll(source_logits.flatten(0, 1), targets).view(n, -1)
                terms[f"nll_{source}"] = example_nll.mean(0).sum() / scored
                if source == "posterior" and weighted:
                    bound = _importance_weighted_bound(
                        example_nll, source_z, encoded.prior, posterior, self.kl_weight,
                        self.elbo_share,
                    )  # fmt: skip
                    terms["iw_bound"] = -bound.sum() / scored
                    loss = loss + self._full_weight * weight * terms["iw_bound"]
                else:
                    loss = loss + self._full_weight * weight * terms[f"nll_{source}"]
            logits[1] = decoded[0]
            if kl is not None:
                terms["kl"] = kl.mean()
                if not weighted:  # the weighted bound holds its own KL
                    loss = loss + kl_share * self.kl_weight * kl.sum() / scored
        terms["loss"] = loss
        return CVAEOutput(loss, {k: v.detach() for k, v in terms.items()}, logits)

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
        with inference_mode(self):
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
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        with inference_mode(self):
            return self._sample(self._encode(x), num_samples)

    def _sample(self, encoded: Encoded, num_samples: int) -> torch.Tensor:
        if not self.spec.stochastic:
            logits = self._deterministic_logits(encoded)
            return logits.unsqueeze(0).expand(num_samples, *logits.shape)
        return self._decode(encoded, encoded.prior.sample((num_samples,)))

    @torch.no_grad()
    def decode(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits (S, B, ...) of p(y|x,z) for given latents z (S, B, *latent)."""
        if not self.spec.uses_latent:
            raise ValueError(f"objective {self.objective!r} has no latent variable to decode")
        with inference_mode(self):
            return self._decode(self._encode(x), z)

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
        if method not in ("auto", "importance", "monte_carlo"):
            raise ValueError(
                f"method must be 'auto', 'importance' or 'monte_carlo', got {method!r}"
            )
        if method == "importance" and self.recognition_net is None:
            raise ValueError(
                f"method='importance' needs a recognition net, which objective "
                f"{self.objective!r} does not train; use method='monte_carlo'"
            )
        y = self._check_target(y, x)
        with inference_mode(self):
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


def _draw(
    source: LatentSource, prior: LatentDistribution, posterior: Normal | None, n: int = 1
) -> torch.Tensor:
    """n latents (n, B, *latent) from one source, differentiable (reparameterised)."""
    if source == "prior_mean":
        return latent_point(prior).unsqueeze(0)
    return (prior if source == "prior" else posterior).rsample((n,))


def _importance_weighted_bound(
    example_nll: torch.Tensor,
    z: torch.Tensor,
    prior: LatentDistribution,
    posterior: Normal,
    beta: float,
    elbo_share: float = 0.0,
) -> torch.Tensor:
    """log mean_k p(y|x,z_k) (p(z_k|x) / q(z_k|x,y))^beta per example, (B,), z_k ~ q.

    Its value is the k-sample importance-sampling estimate of log p(y|x) (Burda et al. 2016);
    its gradient is the doubly reparameterised one (DReG, Tucker et al. 2019): q's
    parameters reach the loss only through z_k, weighted by the squared normalised weights.
    The plain IWAE gradient's signal for q fades as k grows (Rainforth et al. 2018); DReG's
    does not, though q may still settle on the prior when k prior-like samples already
    explain y (README, known truth). torch.distributions has no such estimator.

    ``elbo_share`` s > 0 returns (1 - s) x that bound + s x the k-sample ELBO (mean_k of the
    log weights; CIWAE, Rainforth et al. 2018), whose gradient asks q to be the posterior
    however many samples there are; the ELBO part's gradient for q is the reparameterised
    one without the score term ("sticking the landing", Roeder et al. 2017).
    """
    frozen_q = Normal(posterior.mean.detach(), posterior.stddev.detach())
    log_weights = -example_nll + beta * latent_log_ratio(prior, frozen_q, z)  # (k, B)
    bound = log_mean_exp(log_weights)
    if elbo_share > 0:
        bound = (1 - elbo_share) * bound + elbo_share * log_weights.mean(0)
    if not z.requires_grad:
        return bound
    normalised = torch.softmax(log_weights.detach(), 0)  # (k, B)
    # what the decoder and the prior get: w_k from the bound, 1/k from the ELBO
    coefficients = (1 - elbo_share) * normalised + elbo_share / len(z)
    # what q gets through z_k: w_k^2 from the bound (DReG), 1/k from the ELBO; the hook
    # rescales the coefficient that reaches z_k into that (w_k itself without an ELBO share)
    if elbo_share > 0:
        to_q = ((1 - elbo_share) * normalised**2 + elbo_share / len(z)) / coefficients
    else:
        to_q = normalised  # coefficients = w_k, which may be 0: no division
    z.register_hook(lambda grad: grad * to_q.view(*to_q.shape, *[1] * (z.ndim - 2)))
    surrogate = (coefficients * log_weights).sum(0)
    return bound.detach() + surrogate - surrogate.detach()


class inference_mode:
    """Eval mode for the duration of a call, then the caller's mode back (unlike smp's
    `predict`, which leaves the model in eval mode)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)
