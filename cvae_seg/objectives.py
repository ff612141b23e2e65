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

__all__ = ["OBJECTIVES", "LatentSource", "ObjectiveSpec", "get_objective"]

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
