"""The training loop, checkpoints and model building shared by the tools.

A run is a function of its config and seed alone: the data order and every augmentation are
derived from (seed, step), and a checkpoint holds the model, optimizer, scheduler, AMP scaler,
step, best metric and all RNG states, so N steps plus a resumed N steps give the same weights
as 2N steps (bit for bit on the CPU; the tests check it).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from cvae_seg import distributed
from cvae_seg.conditional import ConditionalGenerativeModel
from cvae_seg.config import Config
from cvae_seg.data import build_dataset
from cvae_seg.evaluation import evaluate, evaluate_likelihood
from cvae_seg.training.build import build_model

__all__ = [
    "ShardSampler",
    "StepSampler",
    "build_model",
    "dataset_for",
    "load_checkpoint",
    "load_for_evaluation",
    "load_trained",
    "make_loader",
    "save_checkpoint",
    "select_device",
    "train",
]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


def select_device(name: str | None = None) -> torch.device:
    """The named device, else the GPU when there is one, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware has it (no loss scaling needed), fp16 on older GPUs."""
    if not config.train.amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class StepSampler(Sampler[tuple[int, int]]):
    """Endless (index, augmentation seed) pairs, a function of (seed, step) alone.

    Epoch e is a permutation seeded by (seed, e), cut to whole global batches (drop-last);
    global batch k of the run is batch k mod (batches per epoch) of epoch k div (batches per
    epoch). Under torchrun, process r of N takes the r-th contiguous slice of each global
    batch, so the run sees the same batches, in the same order and with the same
    augmentations, for any N. Starting at ``start_step`` resumes exactly where a run stopped,
    whatever the number of workers.

    Why not torch's DistributedSampler: it cannot resume in the middle of an epoch and has
    no per-item augmentation seeds; this sampler keeps its contract (disjoint shards of one
    seeded permutation per epoch) and adds both.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size < batch_size:
            raise ValueError(
                f"the training set has {size} items, fewer than one batch of {batch_size}"
            )
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"a global batch of {batch_size} does not split into {world_size} equal "
                f"shards (rank {rank})"
            )
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = size // batch_size

    @property
    def local_batch_size(self) -> int:
        """Items per process and step (the DataLoader's batch size)."""
        return self.batch_size // self.world_size

    def position(self, step: int) -> dict[str, int]:
        return {"epoch": step // self.batches_per_epoch, "batch": step % self.batches_per_epoch}

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, batch = self.position(self.start_step).values()
        local = self.local_batch_size
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)[
                : self.batches_per_epoch * self.batch_size
            ].tolist()
            seeds = np.random.SeedSequence([self.seed, epoch]).generate_state(self.size)
            for start in range(batch * self.batch_size, len(order), self.batch_size):
                shard = start + self.rank * local
                for index in order[shard : shard + local]:
                    yield index, int(seeds[index])
            epoch, batch = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class ShardSampler(Sampler[int]):
    """Process r of N evaluates items r, r + N, r + 2N, ...: every item exactly once over
    all processes (torch's DistributedSampler pads the last shard with repeats instead)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"version": CHECKPOINT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `train`, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(
            f"checkpoint {path} could not be read ({error}); is it truncated?"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a cvae_seg checkpoint (no model and config in it)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has version {state.get('version')}; this cvae_seg reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return state


# --------------------------------------------------------------------------- logging
class _CsvTable:
    """A CSV file of rows keyed by "step", rewritten atomically; a resumed run drops the
    rows after its checkpoint (it will write them again)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume_step and path.is_file():
            with open(path, newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]

    def append(self, values: dict[str, Any]) -> None:
        self.rows.append(values)
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


class _MetricsLog:
    """train.csv (mean loss terms per log interval), metrics.csv (one row per evaluation)
    and TensorBoard events when installed. Only rank 0 writes; elsewhere it does nothing."""

    def __init__(self, work_dir: Path, resume_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.train_table = _CsvTable(work_dir / "train.csv", resume_step)
        self.eval_table = _CsvTable(work_dir / "metrics.csv", resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(work_dir / "tensorboard"), purge_step=resume_step or None
            )
        except ImportError:
            pass

    def _scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def train_row(self, values: dict[str, Any]) -> None:
        if self.enabled:
            self.train_table.append(values)
            self._scalars("train", values, values["step"])

    def eval_row(self, values: dict[str, Any]) -> None:
        if self.enabled:
            self.eval_table.append(values)
            self._scalars("val", values, values["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- training
def _lr_factor(config: Config):
    train = config.train

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.scheduler == "cosine":
            progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def make_loader(dataset, batch_size, workers, device, sampler=None, seed=0) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # its own generator: creating an iterator must not draw from the global RNG, which the
        # model's latent sampling uses (and checkpoints restore)
        generator=torch.Generator().manual_seed(seed),
    )


def _kl_warmup_factor(step: int, train_cfg: Any) -> float:
    """The KL's share at ``step`` (0-based): linear from 1/warmup to 1, then 1."""
    if train_cfg.kl_warmup_steps == 0:
        return 1.0
    return min(1.0, (step + 1) / train_cfg.kl_warmup_steps)


def _rank_rng_seed(seed: int, step: int, rank: int) -> int:
    """Latent-noise seed of process ``rank`` > 0 (rank 0 keeps the single-process stream)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _process_batch_size(config: Config, world: int) -> tuple[int, int]:
    """(global, per-process) batch size for ``world`` processes, as data.batch_scope says."""
    batch = config.data.batch_size
    if config.data.batch_scope == "per_process":
        return batch * world, batch
    if batch % world:
        raise ValueError(
            f"data.batch_size={batch} is the global batch (data.batch_scope=global) and must "
            f"divide evenly among the {world} processes"
        )
    return batch, batch // world


def _wrap_for_processes(
    model: torch.nn.Module, config: Config, device: torch.device
) -> torch.nn.Module:
    """DistributedDataParallel under torchrun (optionally with SyncBatchNorm), else the model."""
    if distributed.world_size() == 1:
        return model
    if config.train.sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                "train.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm has no CPU kernel"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # every parameter receives a gradient in every objective (tested), so DDP need not search
    # for unused ones
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def train(
    config: Config,
    work_dir: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train as the config says; returns the last evaluation and the best one.

    Under torchrun (WORLD_SIZE > 1) it joins the process group and trains with
    DistributedDataParallel: each process takes its shard of every global batch, evaluation
    is pooled over all processes, and only rank 0 writes files.
    """
    work_dir = Path(work_dir)
    device = (
        distributed.init_from_env(device)
        if distributed.launched_by_torchrun()
        else (select_device(device))
    )
    rank, world = distributed.rank(), distributed.world_size()
    main_process = rank == 0
    if main_process:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
    train_cfg = config.train
    global_batch, local_batch = _process_batch_size(config, world)
    random.seed(train_cfg.seed)
    np.random.seed(train_cfg.seed)
    torch.manual_seed(train_cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_set = build_dataset(config.data, "train", train=True)
    val_set = build_dataset(config.data, "val", train=False)
    model = build_model(config, train_set.num_classes).to(device)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=train_cfg.lr,
        betas=train_cfg.betas,
        weight_decay=train_cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    amp_dtype = autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    step, best, evals_since_best = 0, None, 0
    lower_is_better = train_cfg.best_metric == "nll"
    rng_by_rank = None
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, best, evals_since_best = state["step"], state["best"], state["evals_since_best"]
        rng_by_rank = state.get("rng_by_rank") or [state["rng"]]
        if len(rng_by_rank) != world and main_process:
            log.warning(
                "%s was written by %d process(es), this run has %d: the data order is the "
                "same, the latent noise of ranks > 0 is drawn afresh",
                resume,
                len(rng_by_rank),
                world,
            )
        log.info("resumed from %s at step %d", resume, step)
    if rng_by_rank is not None and rank < len(rng_by_rank):
        _set_rng_state(rng_by_rank[rank])
    elif rank > 0:  # distinct latent noise per process; the weights come from rank 0
        torch.manual_seed(_rank_rng_seed(train_cfg.seed, step, rank))
    train_model = _wrap_for_processes(model, config, device)

    sampler = StepSampler(len(train_set), global_batch, train_cfg.seed, step, rank, world)
    batches = iter(
        make_loader(
            train_set, local_batch, config.data.num_workers, device, sampler, train_cfg.seed
        )
    )
    val_loader = make_loader(
        val_set,
        config.eval.batch_size,
        config.data.num_workers,
        device,
        ShardSampler(len(val_set), rank, world),
    )
    history = _MetricsLog(work_dir, step, enabled=main_process)
    running: dict[str, float] = {}
    last_eval: dict[str, Any] = {}
    bar = tqdm(
        total=train_cfg.max_steps,
        initial=step,
        desc="train",
        disable=not (progress and main_process),
    )
    started = time.perf_counter()
    train_model.train()
    try:
        while step < train_cfg.max_steps:
            batch = next(batches)
            x = batch["image"].to(device, non_blocking=True)
            y = batch["mask"].to(device, non_blocking=True)
            if train_cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model.kl_weight = config.model.kl_weight * _kl_warmup_factor(step, train_cfg)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = train_model(x, y)
            if not torch.isfinite(out.loss):
                terms = ", ".join(f"{k}={float(v):.4g}" for k, v in out.terms.items())
                raise FloatingPointError(
                    f"step {step + 1} (rank {rank}): the loss is {float(out.loss.detach())} "
                    f"({terms}); stopped, the last good checkpoint is {work_dir / 'last.pt'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            if train_cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            for key, value in out.terms.items():
                running[key] = running.get(key, 0.0) + float(value)
            bar.update()
            if step % train_cfg.log_interval == 0 or step == train_cfg.max_steps:
                count = (step - 1) % train_cfg.log_interval + 1
                means = _mean_over_processes({k: v / count for k, v in running.items()})
                history.train_row({"step": step, **means, "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{means['loss']:.4f}")
                running = {}
            if step % train_cfg.eval_interval == 0 or step == train_cfg.max_steps:
                distributed.broadcast_buffers(model)  # evaluate rank 0's BatchNorm statistics
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    last_eval = validate(
                        model, config, val_loader, val_set.classes, device, progress
                    )
                train_model.train()
                score = last_eval[train_cfg.best_metric]
                improved = best is None or (score < best if lower_is_better else score > best)
                if improved:
                    best, evals_since_best = score, 0
                else:
                    evals_since_best += 1
                last_eval = {
                    "step": step,
                    "elapsed_s": round(time.perf_counter() - started, 1),
                    **last_eval,
                }
                history.eval_row(last_eval)
                if main_process:
                    log.info("step %d: %s", step, _summary(last_eval))
                rng_states = distributed.all_gather_objects(_rng_state())
                if main_process:
                    state = {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "step": step,
                        "best": best,
                        "evals_since_best": evals_since_best,
                        "rng": rng_states[0],
                        "rng_by_rank": rng_states if world > 1 else None,
                        "sampler": sampler.position(step),
                        "world_size": world,
                        "config": config.model_dump(mode="json"),
                        "classes": list(train_set.classes),
                        "metrics": last_eval,
                    }
                    save_checkpoint(work_dir / "last.pt", state)
                    if improved:
                        save_checkpoint(work_dir / "best.pt", state)
                        model.save_pretrained(  # the shareable form of the best model
                            work_dir / "pretrained",
                            training_config=state["config"],
                            classes=state["classes"],
                            metrics=last_eval,
                        )
                if train_cfg.patience is not None and evals_since_best >= train_cfg.patience:
                    log.info(
                        "early stop at step %d: no gain in %d evaluations", step, evals_since_best
                    )
                    break
    finally:
        model.kl_weight = config.model.kl_weight
        bar.close()
        history.close()
    distributed.barrier()  # every process returns once rank 0's files are written
    return {"last": last_eval, "best": best, "best_metric": train_cfg.best_metric, "step": step}


def _mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each process's running means, averaged over processes (equal shards: the global mean)."""
    if distributed.world_size() == 1:
        return values
    keys = sorted(values)
    summed = distributed.all_reduce_sum(
        torch.tensor([values[k] for k in keys], dtype=torch.float64)
    )
    return {k: float(v) / distributed.world_size() for k, v in zip(keys, summed, strict=True)}


def validate(
    model: ConditionalGenerativeModel,
    config: Config,
    loader: DataLoader,
    classes: tuple[str, ...],
    device: torch.device,
    progress: bool = False,
) -> dict[str, float]:
    """The periodic validation: segmentation metrics, or the likelihood alone for MNIST."""
    pooled = distributed.world_size() > 1  # the loader gives this process's shard
    progress = progress and distributed.is_main_process()
    if config.data.dataset == "mnist":
        return evaluate_likelihood(
            model,
            loader,
            device,
            num_samples=config.eval.num_samples,
            chunk_size=config.eval.chunk_size,
            progress="val" if progress else None,
            across_processes=pooled,
        )
    return evaluate(
        model,
        loader,
        classes,
        device,
        prediction=config.eval.prediction,
        likelihood=config.eval.likelihood_during_training,
        num_samples=config.eval.num_samples,
        chunk_size=config.eval.chunk_size,
        autocast_dtype=autocast_dtype(config, device),
        progress="val" if progress else None,
        across_processes=pooled,
    )


def _summary(values: dict[str, Any]) -> str:
    keys = ("pixel_accuracy", "class_accuracy", "mean_iou", "foreground_iou", "nll")
    return ", ".join(f"{k} {values[k]:.2f}" for k in keys if k in values)


def load_trained(
    checkpoint: str | os.PathLike, device: torch.device
) -> tuple[ConditionalGenerativeModel, Config, list[str]]:
    """Model (eval mode), config and class names of a training checkpoint (``*.pt``) or of a
    `save_pretrained` directory."""
    if Path(checkpoint).is_dir():
        from cvae_seg.hub import from_pretrained, read_pretrained_config

        saved = read_pretrained_config(checkpoint)
        if not saved.get("training_config"):
            raise ValueError(f"{checkpoint}/config.json holds no training_config to evaluate with")
        model = from_pretrained(checkpoint, map_location=device)
        return model, Config.model_validate(saved["training_config"]), saved["classes"]
    state = load_checkpoint(checkpoint, map_location=device)
    config = Config.model_validate(state["config"])
    classes = state["classes"]
    model = build_model(config, len(classes)).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the model its config builds: {error}"
        ) from error
    return model.eval(), config, classes


def load_for_evaluation(
    checkpoint: str | os.PathLike,
    config_path: str | os.PathLike,
    overrides: list[str],
    device: torch.device,
) -> tuple[ConditionalGenerativeModel, Config, list[str]]:
    """A trained model with the user's config for data and evaluation.

    The data settings that define the task (image size, MNIST's observed quadrants) come
    from the trained model's config, whatever the user's config says.
    """
    from cvae_seg.config import load_config

    model, trained, classes = load_trained(checkpoint, device)
    config = load_config(config_path, overrides)
    config.data.size = trained.data.size
    config.data.mnist_observed = trained.data.mnist_observed
    config.model = trained.model
    return model, config, classes


def dataset_for(config: Config, split: str) -> torch.utils.data.Dataset:
    """A split without augmentation, for evaluation and pictures."""
    return build_dataset(config.data, split, train=False)
