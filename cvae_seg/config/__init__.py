"""Typed run configuration: plain YAML validated into pydantic models, with dotted overrides.

A config may name a ``_base_`` file (relative to itself) whose values it overrides, the
mmsegmentation way, so that one file per data set holds the protocol.

An unknown key or a bad value fails with its dotted path and what was expected, e.g.
``configs/x.yaml: train.max_step: unknown key; valid keys: amp, betas, ...``.

`cvae_seg.config.schema` holds the sections and their checks, `cvae_seg.config.files` the
reading of YAML files and overrides.
"""

from cvae_seg.config.files import apply_overrides, load_config, read_yaml_config, validate_config
from cvae_seg.config.schema import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "read_yaml_config",
    "validate_config",
]
