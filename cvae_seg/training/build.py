"""Build the model that a run config describes."""

from __future__ import annotations

from cvae_seg.architectures.mnist import QuadrantCVAE
from cvae_seg.conditional import ConditionalGenerativeModel
from cvae_seg.config import Config
from cvae_seg.factory import create_model

__all__ = ["build_model"]


def build_model(config: Config, num_classes: int) -> ConditionalGenerativeModel:
    """The model that a config describes, for a data set of ``num_classes`` classes."""
    model_config = config.model
    if model_config.arch == "mnist_mlp":
        if model_config.prior_components > 1:
            raise ValueError(
                f"model.prior_components={model_config.prior_components}: the mixture prior "
                "exists for the conv prior net only; arch 'mnist_mlp' takes 1"
            )
        return QuadrantCVAE(
            observed=config.data.mnist_observed,
            objective=model_config.objective,
            hidden=model_config.mlp_hidden,
            latent_features=model_config.latent_channels,
            recurrent=model_config.recurrent,
            alpha=model_config.alpha,
            kl_weight=model_config.kl_weight,
            importance_samples=model_config.importance_samples,
            elbo_share=model_config.elbo_share,
            logvar_bound=model_config.logvar_bound,
            dropout=model_config.mlp_dropout,
        )
    return create_model(
        model_config.arch,
        encoder_name=model_config.encoder_name,
        encoder_weights=model_config.encoder_weights,
        in_channels=3,
        classes=num_classes,
        ignore_index=config.data.ignore_index,
        **model_config.backbone_kwargs,
        **model_config.cvae_kwargs(),
    )
