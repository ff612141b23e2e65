"""The typed run configuration: one pydantic model per YAML section, each key with its
default and its check, and the checks that span sections.

Reading YAML files into these models lives in `cvae_seg.config.files`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from cvae_seg.modules.heads import CVAE_LATENT_CHANNELS, LOGVAR_BOUND
from cvae_seg.modules.peer_nets import PROBUNET_LATENT_CHANNELS

__all__ = ["Config", "DataConfig", "EvalConfig", "ModelConfig", "TrainConfig"]


class _Section(BaseModel):
    # no NaN or inf in any setting: train.lr=.inf or a NaN mean would run to non-finite
    # weights or inputs instead of being refused here, naming the key
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with ``update`` checked like any assignment: pydantic's own copy takes an
        update unchecked, so ``rank=-1``, an unknown key or a head whose default latent size
        differs would pass silently."""
        copied = super().model_copy(deep=deep)
        for key, value in (update or {}).items():
            setattr(copied, key, value)  # validate_assignment: the field's and the model's checks
        return copied


class ModelConfig(_Section):
    """The backbone (smp's create_model arguments, or "sohn2015") and its head's arguments."""

    arch: str = "Unet"
    encoder_name: str = "resnet18"
    encoder_weights: str | None = None
    objective: Literal["cnn", "gdnn", "gsnn", "cvae", "hybrid"] = "cvae"
    # the CVAE's latent map; left unset, head probunet takes its paper's size instead
    latent_channels: int = Field(CVAE_LATENT_CHANNELS, ge=1)
    latent_stride: int = Field(16, ge=1)
    gaussian_widths: tuple[PositiveInt, ...] = Field((64, 96, 128), min_length=1)
    gaussian_kernel_sizes: tuple[PositiveInt, ...] = Field((3, 3, 3), min_length=1)
    generation: Literal["light", "sohn2015"] = "light"
    generation_hidden: int = Field(64, ge=1)
    generation_stride: int = Field(4, ge=1)
    recurrent: bool = True
    alpha: float = Field(0.5, ge=0, le=1)
    kl_weight: float = Field(1.0, ge=0)
    # > 1: train the recognition term on the importance-weighted bound with k samples
    importance_samples: int = Field(1, ge=1)
    # with importance_samples > 1: the share of the k-sample ELBO mixed into that bound (CIWAE;
    # when it helps: docs/benchmarks/known_truth.md)
    elbo_share: float = Field(0.0, ge=0, le=1)
    # log-variances of q and p are squashed into (-bound, bound): std at most exp(bound / 2)
    logvar_bound: float = Field(LOGVAR_BOUND, gt=0)
    # > 1: the prior p(z|x) is a mixture of this many Gaussians (conv priors only; 1: paper)
    prior_components: int = Field(1, ge=1)
    scale_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mlp_hidden: tuple[PositiveInt, ...] = (
        1000,
        1000,
    )  # arch "mnist_mlp": hidden layers of every MLP
    mlp_dropout: float = Field(0.0, ge=0, lt=1)  # arch "mnist_mlp": dropout after each hidden layer
    # the head on an smp (or sohn2015) backbone: the paper's CVAE, or a peer (docs/models.md)
    head: Literal["cvae", "probunet", "ssn", "mc_dropout", "ensemble"] = "cvae"
    encoder_widths: tuple[PositiveInt, ...] = Field(
        (32, 64, 128, 192), min_length=1
    )  # probunet: its prior/posterior nets
    combiner_layers: int = Field(3, ge=1)  # probunet: 1x1 convs mixing z into the features
    rank: int = Field(10, ge=1)  # ssn: rank of the logits' covariance factor
    train_samples: int = Field(20, ge=1)  # ssn: logit maps drawn per image in training
    min_variance: float = Field(1e-5, gt=0)  # ssn: added to the covariance's diagonal
    antithetic: bool = False  # ssn: training maps in pairs mirrored about the mean
    dropout: float = Field(0.5, gt=0, lt=1)  # mc_dropout: channel dropout on decoder features
    members: int = Field(5, ge=2)  # ensemble: number of backbones
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _head_latent_size(self) -> ModelConfig:
        """A latent size left unset is the head's own: the ProbUNet's global latent has 6
        dimensions in its paper, not the 32 channels of the CVAE's latent map."""
        if "latent_channels" not in self.model_fields_set:
            # set past validate_assignment, which would run this validator again; also when
            # the head is assigned back, so that no head keeps another's default
            own = PROBUNET_LATENT_CHANNELS if self.head == "probunet" else CVAE_LATENT_CHANNELS
            object.__setattr__(self, "latent_channels", own)
        return self

    @field_validator("encoder_weights")
    @classmethod
    def _null_is_no_string(cls, weights: str | None) -> str | None:
        if weights is not None and weights.lower() in ("none", "null", "~", ""):
            # smp would read the string as a name of pretrained weights and try to download
            raise ValueError(f"{weights!r} is a string; write null (YAML) for random weights")
        return weights

    @field_validator("scale_weights")
    @classmethod
    def _some_scale_trains(cls, weights: tuple[float, float, float]) -> tuple[float, ...]:
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"expected three weights >= 0, not all 0, got {list(weights)}")
        return weights

    @field_validator("backbone_kwargs")
    @classmethod
    def _no_setting_made_elsewhere(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        made_elsewhere = {
            "classes": "the data set's class names set it",
            "in_channels": "the data set's images set it",
            "encoder_name": "use model.encoder_name",
            "encoder_weights": "use model.encoder_weights",
            "activation": "the heads need the backbone's raw logits",
        }
        for key, why in made_elsewhere.items():
            if key in kwargs and not (key == "activation" and kwargs[key] is None):
                raise ValueError(f"{key}={kwargs[key]!r} cannot be set here: {why}")
        return kwargs


class DataConfig(_Section):
    """Which data set, where, and how it is augmented and batched."""

    dataset: Literal["lfw", "cub", "coco", "multi_annotator", "shapes", "known_truth", "mnist"] = (
        "shapes"
    )
    root: str | None = None  # default: $CVAE_SEG_DATA/<dataset>
    size: int = Field(128, ge=8)
    batch_size: int = Field(32, ge=1)
    # "global": batch_size is the total over all torchrun processes (the same optimisation for
    # any number of processes); "per_process": each process loads batch_size (timm's habit)
    batch_scope: Literal["global", "per_process"] = "global"
    num_workers: int = Field(2, ge=0)
    flip: bool = True
    noise: float = Field(0.0, ge=0, le=1)  # max side of the occluding square; 0: off
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    # > 0: the images are divided by it (a zero would make every input inf)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.229, 0.224, 0.225)
    ignore_index: int | None = None
    cache_dir: str | None = None  # decoded splits as .npz, reused by later runs
    # CUB
    val_fraction: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    cub_margin: float = Field(0.0, ge=0)
    cub_threshold: float = Field(0.5, gt=0, le=1)
    # COCO-format data: annotation files relative to root, one image folder
    coco_train: str = "annotations/train.json"
    coco_val: str = "annotations/val.json"
    coco_test: str | None = None
    coco_images: str = "images"
    # MNIST quadrant completion
    mnist_observed: Literal[1, 2, 3] = 1  # observed quadrants: bottom-left, left half, all but BR
    binarize: bool = False  # False: Bernoulli on grey levels; True: pixels thresholded at 0.5
    mnist_val_size: int = Field(10000, ge=1)  # the last training images, held out
    # generated shapes; shapes_train and shapes_val also size the known_truth splits
    shapes_train: int = Field(2000, ge=1)
    shapes_val: int = Field(200, ge=1)
    shapes_modes: tuple[float, ...] = (0.5, 0.3, 0.2)
    # known_truth: the probabilities of its K hidden parts (K = 1-8; size a multiple of 8)
    known_truth_modes: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    # known_truth: annotations per image, each drawn from the image's true distribution (the
    # first is its label); > 1 trains on one drawn per step and scores against all of them
    known_truth_annotators: int = Field(1, ge=1)
    # known_truth: the share of the 336 layouts reserved for the test split (never drawn in
    # train or val); 0: off, as the published numbers were made
    known_truth_holdout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _warn_keys_of_other_data_sets(self) -> DataConfig:
        """Name the settings this data set never reads (a warning, not an error: switching
        a config to another data set with one override is a normal thing to do)."""
        unused = [
            f"data.{key}={getattr(self, key)!r}"
            for key, datasets in _DATA_KEYS_USED_BY.items()
            if self.dataset not in datasets and getattr(self, key) != _DATA_DEFAULTS[key]
        ]
        if unused:
            warnings.warn(
                f"data.dataset={self.dataset!r} does not use {', '.join(unused)}: ignored",
                UserWarning,
                stacklevel=2,
            )
        return self


_GENERATED, _FILES = ("shapes", "known_truth"), ("lfw", "cub", "coco", "multi_annotator")
# the keys only some data sets read (cvae_seg.data.build_dataset), and which
_DATA_KEYS_USED_BY: dict[str, tuple[str, ...]] = {
    "root": (*_FILES, "mnist"),
    "val_fraction": ("cub",),
    "split_seed": ("cub", *_GENERATED),
    "cub_margin": ("cub",),
    "cub_threshold": ("cub",),
    **dict.fromkeys(("coco_train", "coco_val", "coco_test", "coco_images"), ("coco",)),
    **dict.fromkeys(("mnist_observed", "binarize", "mnist_val_size"), ("mnist",)),
    **dict.fromkeys(("shapes_train", "shapes_val"), _GENERATED),
    "shapes_modes": ("shapes",),
    **dict.fromkeys(
        ("known_truth_modes", "known_truth_annotators", "known_truth_holdout"), ("known_truth",)
    ),
    # MNIST quadrants come as they are: no augmentation, normalisation or cache
    **dict.fromkeys(("flip", "noise", "mean", "std", "cache_dir"), (*_FILES, *_GENERATED)),
}
_DATA_DEFAULTS = {key: DataConfig.model_fields[key].default for key in _DATA_KEYS_USED_BY}


class TrainConfig(_Section):
    """The optimisation (paper: Adam 3e-4, batch 32, weight decay 3e-6)."""

    max_steps: int = Field(10000, ge=1)
    lr: float = Field(3e-4, gt=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    weight_decay: float = Field(3e-6, ge=0)
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    # KL annealing: the KL's weight rises linearly from 0 to model.kl_weight over these steps
    # (a common remedy for latent channels that collapse onto the prior early in training)
    kl_warmup_steps: int = Field(0, ge=0)
    eval_interval: int = Field(500, ge=1)
    # also write last.pt every this many steps between evaluations, so that a long run
    # stopped anywhere loses at most these steps (None: last.pt at evaluations only)
    checkpoint_interval: int | None = Field(None, ge=1)
    log_interval: int = Field(50, ge=1)
    best_metric: Literal[
        "pixel_accuracy", "mean_iou", "foreground_iou", "class_accuracy", "nll"
    ] = "pixel_accuracy"  # "nll" (lower is better) for the likelihood-trained MNIST models
    patience: int | None = Field(None, ge=1)  # stop after this many evaluations without gain
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seeds are 32-bit
    amp: bool = False
    channels_last: bool = False
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all processes


class EvalConfig(_Section):
    """Evaluation: prediction rule and the conditional log-likelihood's sampling."""

    prediction: Literal["mean", "average"] = "mean"
    num_samples: int = Field(50, ge=1)  # S for the CLL (paper: 50 for segmentation)
    chunk_size: int = Field(16, ge=1)
    likelihood_during_training: bool = False
    # tools/evaluate.py: ECE and reliability diagram of the mean of this many samples (0: none)
    calibration_samples: int = Field(16, ge=0)
    mc_samples: int = Field(1000, ge=1)  # Monte Carlo S in tools/evaluate.py for MNIST
    batch_size: int = Field(32, ge=1)


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _sections_agree(self) -> Config:
        """Settings of different sections that only work together, checked before a run
        starts rather than found out at its first step or its first evaluation."""
        mnist_data, mnist_model = self.data.dataset == "mnist", self.model.arch == "mnist_mlp"
        if mnist_data != mnist_model:
            raise ValueError(
                f"model.arch={self.model.arch!r} with data.dataset={self.data.dataset!r}: the "
                "MNIST quadrant task (pixel intensities as targets) needs arch 'mnist_mlp', and "
                "'mnist_mlp' needs data.dataset 'mnist'"
            )
        metric = self.train.best_metric
        if mnist_data and metric != "nll":
            raise ValueError(
                f"train.best_metric={metric!r}: MNIST validation reports the likelihood only; "
                "set train.best_metric=nll"
            )
        if metric == "nll" and not mnist_data and not self.eval.likelihood_during_training:
            raise ValueError(
                "train.best_metric='nll' needs eval.likelihood_during_training=true: "
                "validation estimates the likelihood only then"
            )
        return self
