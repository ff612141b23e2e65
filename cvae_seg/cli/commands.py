"""The four subcommands of ``cvae-seg``: each takes the parsed arguments and returns what it
made. Torch, the models and the data load here, inside the functions, so that the parser and
``--help`` stay fast."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvae_seg.cli.errors import UserError

__all__ = ["COMMANDS"]


# ---------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> dict[str, Any]:
    """Train from the config; flags become overrides, so the work dir's config.yaml records
    every setting the run used (seed and AMP included)."""
    from cvae_seg import distributed
    from cvae_seg.config import load_config
    from cvae_seg.training import select_device, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.device is not None:
        select_device(args.device)  # a device this machine lacks: refused before any work
    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # "--resume key=value": argparse gave the bare flag the override that followed it
        overrides.insert(0, args.resume)
        args.resume = "last"
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.amp:
        overrides.append("train.amp=true")
    config = load_config(args.config, overrides)
    work_dir = args.work_dir or Path("work_dirs") / args.config.stem
    resume = None
    if args.resume is not None:
        resume = work_dir / "last.pt" if args.resume == "last" else Path(args.resume)
        if not resume.exists():
            where = " (the work dir holds no earlier run)" if args.resume == "last" else ""
            raise UserError(f"--resume: checkpoint {resume} does not exist{where}")
    if args.nproc_per_node > 1 and not distributed.launched_by_torchrun():
        from cvae_seg.cli.launch import launch_workers, without_launch_flag

        # the config is valid: start the workers, which read it again
        status = launch_workers(without_launch_flag(args.argv), args.nproc_per_node)
        if status:
            raise SystemExit(status)  # the workers printed why
        return {"processes": args.nproc_per_node, "work_dir": str(work_dir)}
    try:
        result = train(config, work_dir, resume=resume, device=args.device, progress=not args.quiet)
    finally:
        distributed.cleanup()
    if distributed.is_main_process():
        print(json.dumps(result, indent=2))
    return result


def _output_path(args: argparse.Namespace, default_name: str) -> Path:
    """Where evaluate or visualize writes, checked before any work: a path that cannot be
    written would otherwise fail only once the (possibly long) work is done, losing its
    result. The default lies beside the checkpoint (a ``.pt`` file or a save_pretrained
    folder)."""
    if args.out is not None:
        out, named = args.out, f"--out {args.out}"
    else:
        checkpoint = args.checkpoint
        if checkpoint.name in ("", ".."):  # "." or "..": the folder has a name once resolved
            checkpoint = checkpoint.resolve()
        out = checkpoint.parent / default_name
        named = f"--out not given, and the default output {out}"
    if out.is_dir():
        example = f", e.g. {out / default_name}" if args.out is not None else ""
        raise UserError(f"{named} is a folder; give --out a file path{example}")
    return _writable(out, named, args)


def _writable(out: Path, named: str, args: argparse.Namespace) -> Path:
    """``out`` if a file can be written there without destroying an input."""
    if out.is_dir():
        raise UserError(f"{named} is a folder; expected a file path")
    for given in (args.config, args.checkpoint):
        if out.exists() and out.resolve() == given.resolve():
            raise UserError(f"{named} is the input {given}, which writing would destroy")
    folder = next(path for path in (out.parent, *out.parent.parents) if path.exists())
    if not folder.is_dir():
        raise UserError(f"{named} lies under {folder}, which is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{named} cannot be written: the folder {folder} is not writable")
    return out


def _load_model(args: argparse.Namespace) -> tuple[Any, Any, Any, list[str]]:
    """Device, model, config and classes for evaluate and visualize."""
    from cvae_seg.training import load_for_evaluation, select_device

    device = select_device(args.device)
    model, config, classes = load_for_evaluation(
        args.checkpoint, args.config, args.overrides, device
    )
    return device, model, config, classes


def _load_data(args: argparse.Namespace, config: Any, classes: list[str]) -> Any:
    """The split's data set, refused when its classes are not the checkpoint's."""
    from cvae_seg.training import dataset_for

    dataset = dataset_for(config, args.split)
    found = list(getattr(dataset, "classes", classes))
    if list(classes) != found:
        # scores named after the wrong classes would look believable: refuse them
        raise UserError(
            f"checkpoint {args.checkpoint} predicts the classes {list(classes)}, but the "
            f"{args.split} split of {args.config} ({config.data.dataset}) has {found}; give "
            "the config the checkpoint was trained with"
        )
    return dataset


_MNIST = "MNIST quadrant completion (data.dataset=mnist)"


def _refuse_flags_the_data_ignores(args: argparse.Namespace, dataset: str) -> None:
    """Refuse a flag that evaluate or visualize ignores for this data set, naming it and why:
    an ignored flag reads as a setting that took effect. Checked once the config says which
    data set it is, before the data loads."""
    mnist = dataset == "mnist"
    if args.command == "evaluate":
        refused = [
            (mnist and args.partial, f"--partial does not apply to {_MNIST}: Table 4's "
             "partial observations are scored on segmentation data"),
            (mnist and args.prediction is not None, f"--prediction does not apply to {_MNIST}:"
             " its report scores no prediction, only the negative CLL (Table 1)"),
            (mnist and args.no_likelihood, f"--no-likelihood does not apply to {_MNIST}: the "
             "negative CLL is all its report holds, so nothing would be left"),
            (mnist and args.reliability is not None, f"--reliability does not apply to "
             f"{_MNIST}: its targets are pixel intensities, not classes"),
        ]  # fmt: skip
    else:
        refused = [
            (mnist and args.occlude is not None, f"--occlude does not apply to {_MNIST}: its "
             "hidden region is the unobserved quadrants (data.mnist_observed)"),
            (not mnist and args.baseline is not None, "--baseline applies only to MNIST "
             f"quadrant completion (Figure 3's NN column), not to data.dataset={dataset}"),
            (mnist and args.compare, f"--compare does not apply to {_MNIST}: its picture is "
             "Figure 3 (compare a quadrant model through --baseline)"),
        ]  # fmt: skip
    for given, message in refused:
        if given:
            raise UserError(message)


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score a checkpoint on a split; prints a table and writes the same numbers as JSON."""
    import torch

    from cvae_seg.io import atomic_write_text
    from cvae_seg.training import make_loader

    out = _output_path(args, f"eval_{args.split}.json")
    if args.reliability is not None:
        _writable(args.reliability, f"--reliability {args.reliability}", args)
        if args.reliability.suffix.lower() != ".png":
            raise UserError(f"--reliability {args.reliability}: the diagram is written as PNG; "
                            "give a name ending in .png")  # fmt: skip
    device, model, config, classes = _load_model(args)
    _refuse_flags_the_data_ignores(args, config.data.dataset)
    if args.reliability is not None and config.eval.calibration_samples == 0:
        raise UserError("--reliability draws the ECE's diagram, which eval.calibration_samples=0 "
                        "turns off; give it a positive number of samples")  # fmt: skip
    dataset = _load_data(args, config, classes)
    if args.num_samples is not None:
        config.eval.num_samples = args.num_samples
    if args.prediction is not None:
        config.eval.prediction = args.prediction
    loader = make_loader(dataset, config.eval.batch_size, config.data.num_workers, device)
    torch.manual_seed(0)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "objective": config.model.objective,
        "head": config.model.head,
        "arch": config.model.arch,
    }
    if config.data.dataset == "mnist":
        result.update(_likelihoods(model, loader, device, config))
    else:
        result.update(_segmentation(model, loader, classes, device, config, args))
    _print_table(result)
    atomic_write_text(out, json.dumps(result, indent=2))
    print(out)
    if args.reliability is not None:
        _save_reliability(result, args)
    return result


def _save_reliability(result: dict[str, Any], args: argparse.Namespace) -> None:
    from cvae_seg.evaluation import diagram_from_lists
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.visualization import reliability_plot

    diagram = diagram_from_lists(result["reliability_diagram"])
    title = f"{result['head']} {result['objective']}, {args.split}: ECE {result['ece']:.4f}"
    atomic_save_image(args.reliability, reliability_plot(diagram, title))
    print(args.reliability)


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'metric':<24}value")
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:<24}{value:.3f}")
    for row in result.get("partial_observation", []):
        text = ", ".join(
            f"{k} {v:.2f}" for k, v in row.items() if k not in ("block_size", "drop_prob")
        )
        print(f"partial b={row['block_size']} p={row['drop_prob']}: {text}")


def _segmentation(model, loader, classes, device, config, args) -> dict[str, Any]:
    from cvae_seg.evaluation import evaluate, partial_observation
    from cvae_seg.training import autocast_dtype

    result = {
        "prediction": config.eval.prediction,
        **evaluate(
            model,
            loader,
            classes,
            device,
            prediction=config.eval.prediction,
            likelihood=not args.no_likelihood,
            num_samples=config.eval.num_samples,
            chunk_size=config.eval.chunk_size,
            autocast_dtype=autocast_dtype(config, device),
            calibration_samples=config.eval.calibration_samples,
        ),
    }
    if not args.no_likelihood:
        result["likelihood_method"] = model.likelihood_method
    if getattr(loader.dataset, "num_annotators", 1) > 1:  # the LIDC protocol: GED, HM-IoU
        from cvae_seg.evaluation import evaluate_annotators

        result.update(evaluate_annotators(model, loader, len(classes), device,
                                          chunk_size=config.eval.chunk_size))  # fmt: skip
    if args.partial:
        fill = [-m / s for m, s in zip(config.data.mean, config.data.std, strict=True)]
        result["partial_observation"] = partial_observation(
            model, loader, device, fill, num_iterations=args.iterations
        )
    return result


def _likelihoods(model, loader, device, config) -> dict[str, float]:
    """MNIST: the negative CLL by every estimator the model supports (Table 1)."""
    from cvae_seg.evaluation import evaluate_likelihood

    if not model.spec.stochastic:
        runs = {"exact": ("auto", 1)}
    else:
        runs = {"monte_carlo": ("monte_carlo", config.eval.mc_samples)}
        if model.recognition_net is not None:
            runs["importance"] = ("importance", config.eval.num_samples)
    result = {}
    for name, (method, samples) in runs.items():
        values = evaluate_likelihood(
            model, loader, device, samples, method, chunk_size=config.eval.chunk_size
        )
        result.update({f"{key}_{name}": value for key, value in values.items()})
    return result


def _visualize(args: argparse.Namespace) -> Path:
    """Draw a seeded sample grid (Figure 3's layout for MNIST) and write it as PNG."""
    import numpy as np

    from cvae_seg.cli.compare import check_overrides_are_not_checkpoints, compared_models
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.visualization import models_grid, quadrant_grid, sample_grid

    picture = "compare" if args.compare else "samples"
    out = _output_path(args, f"{picture}_{args.split}.png")
    if out.suffix.lower() != ".png":  # a .jpg name holding PNG bytes would mislead viewers
        raise UserError(f"--out {out}: visualize writes PNG; give a name ending in .png")
    if args.compare:
        check_overrides_are_not_checkpoints(args)
    device, model, config, classes = _load_model(args)
    _refuse_flags_the_data_ignores(args, config.data.dataset)
    baseline = _load_baseline(args, model, device) if args.baseline is not None else None
    # the --compare models are checked before the data loads
    models = compared_models(args, device, config, classes, model) if args.compare else {}
    dataset = _load_data(args, config, classes)
    rng = np.random.default_rng(args.seed)
    count = min(args.num_images, len(dataset))
    indices = sorted(rng.choice(len(dataset), count, replace=False).tolist())
    occlude = args.occlude or 0.0
    if config.data.dataset == "mnist":
        grid = quadrant_grid(model, dataset, indices, args.num_samples, baseline, args.seed)
    elif models:
        grid = models_grid(models, dataset, indices, args.num_samples, occlude, args.seed, scale=2)
    else:
        grid = sample_grid(model, dataset, indices, args.num_samples, occlude, args.seed)
    atomic_save_image(out, grid)
    print(out)
    return out


def _load_baseline(args: argparse.Namespace, model: Any, device: Any) -> Any:
    """The --baseline model for Figure 3's NN column, refused before any drawing unless it
    completes the same quadrants as the model (its column would show other inputs)."""
    from cvae_seg.cli.compare import load_flagged
    from cvae_seg.visualization import check_baseline

    baseline = load_flagged("--baseline", args.baseline, device)[0]
    try:
        check_baseline(model, baseline)
    except (TypeError, ValueError) as error:
        raise UserError(f"--baseline {args.baseline}: {error}") from None
    return baseline


def _download(args: argparse.Namespace) -> Path:
    """Fetch a data set into ROOT/<dataset>/ and say which folder to point data.root at."""
    from cvae_seg.data.download import download

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = download(args.dataset, args.root)
    if args.dataset == "cub" and (folder / "CUB_200_2011").is_dir():
        print(f"CUB root: {folder} (CUB_200_2011/ and segmentations/ in it)")
    print(f"done: {folder}")
    return folder


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "train": _train,
    "evaluate": _evaluate,
    "visualize": _visualize,
    "download": _download,
}
