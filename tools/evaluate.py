"""Evaluate a checkpoint: accuracy, IoU, conditional log-likelihood, partial observations.

    python tools/evaluate.py CONFIG CHECKPOINT [--split val|test] [--out FILE]
        [--num-samples 50] [--prediction mean|average] [--partial] [--iterations 5]
        [--device D] [key.sub=value ...]

CONFIG and the overrides set the data and evaluation; the model comes from the checkpoint (a
train.py ``.pt`` file or a save_pretrained folder).
The negative conditional log-likelihood (nats per image) uses importance sampling for models
with a recognition net (cvae, hybrid) and Monte Carlo otherwise; deterministic models are
exact. ``--partial`` adds the paper's Table 4 grid (drop 25/50/70% of 1/4/8 px blocks): the
plain prediction against the CVAE's iterative inference. For MNIST quadrant completion
(Table 1) it reports the negative CLL by every estimator the model has: exact (NN), Monte
Carlo with eval.mc_samples, importance sampling with --num-samples. Prints a table, writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--num-samples", type=int, default=None, help="S for the likelihood")
    parser.add_argument("--prediction", choices=["mean", "average"], default=None)
    parser.add_argument("--no-likelihood", action="store_true")
    parser.add_argument("--partial", action="store_true", help="Table 4 partial observations")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_intermixed_args(argv)

    import torch

    from cvae_seg.engine import dataset_for, load_for_evaluation, make_loader, select_device
    from cvae_seg.reporting import atomic_write_text

    device = select_device(args.device)
    model, config, classes = load_for_evaluation(
        args.checkpoint, args.config, args.overrides, device
    )
    if args.num_samples is not None:
        config.eval.num_samples = args.num_samples
    if args.prediction is not None:
        config.eval.prediction = args.prediction
    dataset = dataset_for(config, args.split)
    loader = make_loader(dataset, config.eval.batch_size, config.data.num_workers, device)
    torch.manual_seed(0)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "objective": config.model.objective,
        "arch": config.model.arch,
    }
    if config.data.dataset == "mnist":
        result.update(_likelihoods(model, loader, device, config, args.no_likelihood))
    else:
        result.update(_segmentation(model, loader, classes, device, config, args))

    print(f"{'metric':<24}value")
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:<24}{value:.3f}")
    for row in result.get("partial_observation", []):
        text = ", ".join(
            f"{k} {v:.2f}" for k, v in row.items() if k not in ("block_size", "drop_prob")
        )
        print(f"partial b={row['block_size']} p={row['drop_prob']}: {text}")
    out = args.out or args.checkpoint.with_name(f"eval_{args.split}.json")
    atomic_write_text(out, json.dumps(result, indent=2))
    print(out)
    return result


def _segmentation(model, loader, classes, device, config, args) -> dict:
    from cvae_seg.engine import autocast_dtype
    from cvae_seg.evaluation import evaluate, partial_observation

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
        ),
    }
    if not args.no_likelihood:
        result["likelihood_method"] = _method(model)
    if args.partial:
        fill = [-m / s for m, s in zip(config.data.mean, config.data.std, strict=True)]
        result["partial_observation"] = partial_observation(
            model, loader, device, fill, num_iterations=args.iterations
        )
    return result


def _method(model) -> str:
    if model.recognition_net is not None:
        return "importance"
    return "monte_carlo" if model.spec.stochastic else "exact"


def _likelihoods(model, loader, device, config, skip: bool) -> dict:
    """MNIST: the negative CLL by every estimator the model supports (Table 1)."""
    from cvae_seg.evaluation import evaluate_likelihood

    if skip:
        return {}
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


if __name__ == "__main__":
    main()
