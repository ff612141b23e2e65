"""The training loop: `train` runs a config end to end (`train_step` is one update).

A run is a function of its config and seed alone: the data order and every augmentation are
derived from (seed, step) (`StepSampler`), and a checkpoint holds everything else that
changes as it runs, so N steps plus a resumed N steps give the same weights, logs and
metrics as 2N steps (bit for bit on the CPU; the tests check it).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cvae_seg import distributed
from cvae_seg.config import Config
from cvae_seg.data import build_dataset
from cvae_seg.models.base import ConditionalGenerativeModel
from cvae_seg.training.build import build_model
from cvae_seg.training.checkpoint import (
    CheckpointSaver,
    load_checkpoint,
    load_model_state,
    rng_state,
    set_rng_state,
)
from cvae_seg.training.metrics_log import MetricsLog, RunningMeans
from cvae_seg.training.optimizer import apply_optimizer_settings, build_optimizer
from cvae_seg.training.runtime import (
    autocast_dtype,
    process_batch_size,
    rank_rng_seed,
    select_device,
    wrap_for_processes,
)
from cvae_seg.training.samplers import ShardSampler, StepSampler, make_loader
from cvae_seg.training.schedules import kl_warmup_factor
from cvae_seg.training.step import train_step
from cvae_seg.training.validation import summary, validate
from cvae_seg.training.work_dir import (
    check_work_dir,
    record_config,
    removed_if_set_up_fails,
    warn_of_an_earlier_run,
)

__all__ = ["train"]

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """Everything a running training holds, passed between the loop's parts."""

    config: Config
    work_dir: Path
    device: torch.device
    model: ConditionalGenerativeModel  # the bare model: its state, kl_weight, evaluation
    train_model: torch.nn.Module  # what the loss runs through (DDP under torchrun)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train_set: Any
    val_set: Any
    saver: CheckpointSaver
    sampler: StepSampler | None = None
    step: int = 0
    running: RunningMeans = field(default_factory=RunningMeans)
    last_eval: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def rank(self) -> int:
        return distributed.rank()

    @property
    def main_process(self) -> bool:
        return distributed.is_main_process()


def _join_processes(device: str | None) -> torch.device:
    if distributed.launched_by_torchrun():
        return distributed.init_from_env(device)
    return select_device(device)


def _read_resume(
    resume: str | os.PathLike | None, config: Config, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint to resume from, refused when the run would go nowhere."""
    if resume is None:
        return None
    state = load_checkpoint(resume, map_location=device)
    if config.train.max_steps < state["step"]:
        raise ValueError(
            f"train.max_steps={config.train.max_steps} is below step {state['step']} of "
            f"checkpoint {resume}: resuming would train nothing; set train.max_steps to "
            f"{state['step']} or more"
        )
    return state


def _loaders(run: _Run, device: torch.device) -> tuple[Any, Any]:
    """The training loader (each process its shard of every global batch, in the order the
    step sampler fixes for any resume) and the validation loader."""
    config, world = run.config, distributed.world_size()
    global_batch, local_batch = process_batch_size(config, world)
    seed, workers = config.train.seed, config.data.num_workers
    _check_batch_fits(len(run.train_set), global_batch)
    run.train_model = wrap_for_processes(run.model, config, device)
    run.sampler = StepSampler(
        len(run.train_set), global_batch, seed, run.step, distributed.rank(), world
    )
    loader = make_loader(run.train_set, local_batch, workers, device, run.sampler, seed)
    val_sampler = ShardSampler(len(run.val_set), distributed.rank(), world)
    val_loader = make_loader(run.val_set, config.eval.batch_size, workers, device, val_sampler)
    return loader, val_loader


def _check_batch_fits(items: int, batch: int) -> None:
    """Refuse a batch larger than the training set, naming the setting (the sampler's own
    check would be a bug's traceback on the command line)."""
    if items < batch:
        raise ValueError(
            f"data.batch_size={batch} is more than the {items} items of the training set; "
            "lower data.batch_size or give more data"
        )


def _build_run(config: Config, work_dir: Path, device: torch.device) -> _Run:
    """Seeded data, model, optimizer, scheduler and scaler of a new run (before any resume)."""
    train_cfg = config.train
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
    optimizer, scheduler = build_optimizer(model, train_cfg)
    amp_dtype = autocast_dtype(config, device)
    return _Run(
        config=config,
        work_dir=work_dir,
        device=device,
        model=model,
        train_model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        train_set=train_set,
        val_set=val_set,
        saver=CheckpointSaver(
            work_dir, train_cfg.best_metric, train_cfg.patience, write=distributed.rank() == 0
        ),
    )


# where the data is and how fast it loads: free to change between calls of one run
_DATA_KEYS_OF_THE_MACHINE = frozenset({"root", "cache_dir", "num_workers"})


def _warn_of_changed_data(saved: dict[str, Any], config: Config, resume: Any) -> None:
    """Name each data setting that differs from the checkpoint's (a warning, as for a changed
    learning rate: going on at another size or on other data can be meant, but never
    unnoticed). A key the checkpoint predates counts as its default."""
    current = config.data.model_dump(mode="json")
    defaults = type(config.data)().model_dump(mode="json")
    for key in sorted(set(current) - _DATA_KEYS_OF_THE_MACHINE):
        before = saved.get(key, defaults[key])
        if before != current[key]:
            log.warning(
                "resumed with data.%s=%r (checkpoint %s trained with %r)",
                key, current[key], resume, before,
            )  # fmt: skip


def _restore(run: _Run, state: dict[str, Any] | None, resume: Any) -> None:
    """Continue from ``state`` (a checkpoint), or give ranks > 0 their own latent noise."""
    world = distributed.world_size()
    if state is None:
        if run.rank > 0:  # distinct latent noise per process; the weights come from rank 0
            torch.manual_seed(rank_rng_seed(run.config.train.seed, 0, run.rank))
        return
    _warn_of_changed_data(state["config"].get("data", {}), run.config, resume)
    saved_model = state["config"].get("model", {})
    current = run.config.model.model_dump(mode="json")
    load_model_state(run.model, state["model"], f"checkpoint {resume}", saved_model, current)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    apply_optimizer_settings(run.optimizer, run.scheduler, run.config.train)
    run.scaler.load_state_dict(state["scaler"])
    run.saver.load_state_dict(state)
    run.step, run.last_eval = state["step"], dict(state.get("metrics") or {})
    rng_by_rank = state.get("rng_by_rank") or [state["rng"]]
    running_by_rank = state.get("running_by_rank") or []
    if len(rng_by_rank) != world and run.main_process:
        log.warning(
            "%s was written by %d process(es), this run has %d: the data order is the same, "
            "the latent noise of ranks > 0 is drawn afresh and train.csv's next row averages "
            "the steps after the resume only",
            resume,
            len(rng_by_rank),
            world,
        )
    if run.rank < len(rng_by_rank):
        set_rng_state(rng_by_rank[run.rank])
    else:
        torch.manual_seed(rank_rng_seed(run.config.train.seed, run.step, run.rank))
    if len(running_by_rank) == world:  # else the sums restart here (RunningMeans counts)
        run.running.load_state_dict(running_by_rank[run.rank])
    log.info("resumed from %s at step %d", resume, run.step)


def _due(step: int, interval: int, max_steps: int) -> bool:
    return step % interval == 0 or step == max_steps


def _checkpoint_state(run: _Run) -> dict[str, Any] | None:
    """What last.pt holds at this step (on rank 0; None elsewhere). Collective: every
    process must call it, since it gathers each process's RNG state and running sums."""
    gathered = distributed.all_gather_objects(
        {"rng": rng_state(), "running": run.running.state_dict()}
    )
    if not run.main_process:
        return None
    world = len(gathered)
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": run.step,
        "rng": gathered[0]["rng"],
        "rng_by_rank": [g["rng"] for g in gathered] if world > 1 else None,
        "running_by_rank": [g["running"] for g in gathered],
        "sampler": run.sampler.position(run.step),
        "world_size": world,
        "config": run.config.model_dump(mode="json"),
        "classes": list(run.train_set.classes),
        "metrics": run.last_eval,
    }


def _evaluate_and_save(run: _Run, val_loader: Any, history: MetricsLog, progress: bool) -> None:
    """Validate, log metrics.csv, and save last.pt (best.pt and the export on a gain)."""
    distributed.broadcast_buffers(run.model)  # evaluate rank 0's BatchNorm statistics
    device = run.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        metrics = validate(run.model, run.config, val_loader, run.val_set.classes, device, progress)
    run.train_model.train()
    _check_finite_metrics(run, metrics)
    improved = run.saver.update(metrics)
    elapsed = round(time.perf_counter() - run.started, 1)
    run.last_eval = {"step": run.step, "elapsed_s": elapsed, **metrics}
    history.eval_row(run.last_eval)
    if run.main_process:
        log.info("step %d: %s", run.step, summary(run.last_eval))
    state = _checkpoint_state(run)
    if state is not None:
        run.saver.save(state, run.model, improved)


def _check_finite_metrics(run: _Run, metrics: dict[str, Any]) -> None:
    """Stop when the tracked metric or the likelihood is NaN or inf (before any saving)."""
    for key in dict.fromkeys((run.config.train.best_metric, "nll")):
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            raise FloatingPointError(
                f"step {run.step} (rank {run.rank}): validation gave {key}={value}; stopped, "
                f"the last good checkpoint is {run.saver.last_path}"
            )


def _save_last(run: _Run) -> None:
    """last.pt alone (no validation): before the first update, so that a run failing at
    once leaves a checkpoint, and every train.checkpoint_interval steps. Either resumes
    exactly as the run would have gone on."""
    state = _checkpoint_state(run)
    if state is not None:
        run.saver.save(state, run.model, improved=False)


def _next_batch(run: _Run, batches: Iterator[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = next(batches)
    x = batch["image"].to(run.device, non_blocking=True)
    y = batch["mask"].to(run.device, non_blocking=True)
    if run.config.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _fit(
    run: _Run,
    batches: Iterator[dict[str, Any]],
    val_loader: Any,
    history: MetricsLog,
    bar: tqdm,
    progress: bool,
) -> None:
    """Steps until train.max_steps or early stopping, logging and evaluating on schedule."""
    train_cfg, model_cfg = run.config.train, run.config.model
    run.train_model.train()
    while run.step < train_cfg.max_steps:
        x, y = _next_batch(run, batches)
        run.model.kl_weight = model_cfg.kl_weight * kl_warmup_factor(
            run.step, train_cfg.kl_warmup_steps
        )
        try:
            terms = train_step(
                run.train_model,
                x,
                y,
                run.optimizer,
                run.scaler,
                grad_clip=train_cfg.grad_clip,
                autocast_dtype=run.amp_dtype,
            )
        except FloatingPointError as error:
            raise FloatingPointError(
                f"step {run.step + 1} (rank {run.rank}): {error}; stopped, the last good "
                f"checkpoint is {run.saver.last_path}"
            ) from None
        run.scheduler.step()
        run.step += 1
        run.running.add(terms)
        bar.update()
        if _due(run.step, train_cfg.log_interval, train_cfg.max_steps):
            means = distributed.mean_over_processes(run.running.means())
            history.train_row({"step": run.step, **means, "lr": run.scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            run.running.reset()
        if _due(run.step, train_cfg.eval_interval, train_cfg.max_steps):
            _evaluate_and_save(run, val_loader, history, progress)
            if run.saver.should_stop:
                log.info(
                    "early stop at step %d: no gain in %d evaluations",
                    run.step,
                    run.saver.evals_since_best,
                )
                break
        elif train_cfg.checkpoint_interval and run.step % train_cfg.checkpoint_interval == 0:
            _save_last(run)


def train(
    config: Config,
    work_dir: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train as the config says; returns the last evaluation and the best metric.

    The work dir gets config.yaml, train.csv, metrics.csv, TensorBoard events (when
    installed), last.pt, best.pt and the best model's `save_pretrained` export. ``resume``
    continues from a checkpoint (refused when ``train.max_steps`` is below its step).

    Under torchrun (WORLD_SIZE > 1) it joins the process group and trains with
    DistributedDataParallel: each process takes its shard of every global batch, evaluation
    is pooled over all processes, and only rank 0 writes files.
    """
    work_dir = Path(work_dir)
    torch_device = _join_processes(device)
    state = _read_resume(resume, config, torch_device)
    with removed_if_set_up_fails(work_dir):
        if distributed.is_main_process():
            check_work_dir(work_dir)
            if state is None:
                warn_of_an_earlier_run(work_dir)
        run = _build_run(config, work_dir, torch_device)
        _restore(run, state, resume)
        loader, val_loader = _loaders(run, torch_device)
    if run.main_process:
        record_config(work_dir, config)
    if state is None:
        _save_last(run)
    history = MetricsLog(work_dir, run.step, enabled=run.main_process)
    show = progress and run.main_process
    bar = tqdm(total=config.train.max_steps, initial=run.step, desc="train", disable=not show)
    run.started = time.perf_counter()
    try:
        _fit(run, iter(loader), val_loader, history, bar, progress)
    finally:
        run.model.kl_weight = config.model.kl_weight
        bar.close()
        history.close()
    distributed.barrier()  # every process returns once rank 0's files are written
    return {
        "last": run.last_eval,
        "best": run.saver.best,
        "best_metric": config.train.best_metric,
        "step": run.step,
    }
