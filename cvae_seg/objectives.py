"""The paper's training objectives as one small table of behaviour.

Every objective is a weighted sum of reconstruction terms, each decoding one kind of latent:

========  =====================================  ==================  =============
name      latents decoded in training            KL(q || p) weight   recognition
========  =====================================  ==================  =============
cnn       none (the backbone alone)              0                   no
gdnn      prior mean                             0                   no
gsnn      sample of the prior p(z|x)             0                   no
cvae      sample of the recognition q(z|x,y)     1                   yes
hybrid    q sample (alpha) + p sample (1-alpha)  alpha               yes
========  =====================================  ==================  =============

The same table drives the segmentation model and the MNIST MLPs, so both share one meaning
of "gsnn" or "hybrid". With ``importance_samples=k > 1`` the recognition term (and its KL)
becomes the k-sample importance-weighted bound (see `ConditionalGenerativeModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.distributions import Normal

from cvae_seg.likelihood import latent_log_ratio, log_mean_exp
from cvae_seg.modules.latent import LatentDistribution, latent_point

__all__ = [
    "OBJECTIVES",
    "LatentSource",
    "ObjectiveSpec",
    "draw_latents",
    "get_objective",
    "importance_weighted_bound",
]

LatentSource = Literal["prior_mean", "prior", "posterior"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """What one objective decodes and weighs; see the module docstring."""

    name: str
    uses_latent: bool
    stochastic: bool
    needs_recognition: bool
    # (latent source, weight) pairs; weights may depend on alpha, see `terms`.
    _terms: tuple[tuple[LatentSource, str], ...]
    _kl_weight: str

    def terms(self, alpha: float) -> tuple[tuple[LatentSource, float], ...]:
        """(latent source, weight) of every reconstruction term for a hybrid weight alpha."""
        return tuple((source, _weight(w, alpha)) for source, w in self._terms)

    def kl_weight(self, alpha: float) -> float:
        return _weight(self._kl_weight, alpha)


def _weight(symbol: str, alpha: float) -> float:
    return {"0": 0.0, "1": 1.0, "alpha": alpha, "1-alpha": 1.0 - alpha}[symbol]


OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("cnn", False, False, False, (), "0"),
        ObjectiveSpec("gdnn", True, False, False, (("prior_mean", "1"),), "0"),
        ObjectiveSpec("gsnn", True, True, False, (("prior", "1"),), "0"),
        ObjectiveSpec("cvae", True, True, True, (("posterior", "1"),), "1"),
        ObjectiveSpec(
            "hybrid", True, True, True, (("posterior", "alpha"), ("prior", "1-alpha")), "alpha"
        ),
    )
}


def get_objective(name: str) -> ObjectiveSpec:
    """Look an objective up by name, with an error that lists the valid names."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}") from None


# ------------------------------------------------------------------ the losses' pieces
def draw_latents(
    source: LatentSource, prior: LatentDistribution, posterior: Normal | None, n: int = 1
) -> torch.Tensor:
    """n latents (n, B, *latent) from one source, differentiable (reparameterised)."""
    if source == "prior_mean":
        return latent_point(prior).unsqueeze(0)
    return (prior if source == "prior" else posterior).rsample((n,))


def importance_weighted_bound(
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
    explain y. torch.distributions has no such estimator.

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
