"""Training: the loop and its parts, each in a module of its own.

- `loop`: `train`, a config end to end (resumable, under torchrun too);
- `step`: `train_step`, one update with its non-finite checks (for loops of your own);
- `optimizer`: Adam and its schedule, and the settings a resume applies;
- `checkpoint`: `CheckpointSaver` (last.pt, best.pt, the pretrained export),
  `load_checkpoint`, `load_model_state`;
- `metrics_log`: train.csv, metrics.csv and TensorBoard;
- `samplers`: `StepSampler` (the data order as a function of seed and step), `ShardSampler`,
  `make_loader`;
- `schedules`: the learning-rate factor and the KL warm-up;
- `runtime`: device, mixed precision, torchrun processes;
- `validation`: the periodic validation;
- `loading`: a trained run read back for evaluation (`load_trained`, `load_for_evaluation`,
  `dataset_for`);
- `build`: `build_model`, the model a config describes.
"""

from cvae_seg.training.build import build_model
from cvae_seg.training.checkpoint import (
    CheckpointSaver,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cvae_seg.training.loading import dataset_for, load_for_evaluation, load_trained
from cvae_seg.training.loop import train
from cvae_seg.training.metrics_log import CsvTable, MetricsLog, RunningMeans
from cvae_seg.training.runtime import autocast_dtype, select_device
from cvae_seg.training.samplers import ShardSampler, StepSampler, make_loader
from cvae_seg.training.schedules import kl_warmup_factor, lr_factor
from cvae_seg.training.step import train_step
from cvae_seg.training.validation import validate

__all__ = [
    "CheckpointSaver",
    "CsvTable",
    "MetricsLog",
    "RunningMeans",
    "ShardSampler",
    "StepSampler",
    "autocast_dtype",
    "build_model",
    "dataset_for",
    "kl_warmup_factor",
    "load_checkpoint",
    "load_for_evaluation",
    "load_model_state",
    "load_trained",
    "lr_factor",
    "make_loader",
    "rng_state",
    "save_checkpoint",
    "select_device",
    "set_rng_state",
    "train",
    "train_step",
    "validate",
]
