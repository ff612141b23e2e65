"""The ``cvae-seg`` parsers: one per subcommand, with the tools' arguments, checked on entry.

A flag's value is checked where argparse reads it, so a bad one ends in argparse's own usage
message and exit status 2 before anything slow (torch, the models, the data) loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from cvae_seg.cli.errors import speaks_for_the_job

__all__ = ["PROG", "build_parser", "parse"]

PROG = "cvae-seg"
SPLITS = ("train", "val", "test")
PARTIAL_ITERATIONS = 5  # evaluate --partial: the CVAE's inference iterations by default


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        text = f"{self.prog}: error: {message} (see {self.prog} --help)\n"
        self.exit(2, text if speaks_for_the_job() else None)


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text}")
    return value


def _side_share(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a share of the image side in [0, 1), got {text}"
        )
    return value


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def _existing_file(text: str) -> Path:
    path = _existing_path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path


# ----------------------------------------------------------------------------- parsers
_TRAIN_HELP = """Train a model from a YAML config.

    cvae-seg train configs/demo.yaml [--work-dir DIR] [--resume [CKPT]] [--seed N]
        [--device cpu|cuda] [--amp] [key.sub=value ...]
    cvae-seg train configs/demo.yaml --nproc-per-node N ...   # DDP on this machine
    torchrun --nproc_per_node=N tools/train.py configs/demo.yaml ...   # DDP, same arguments

The work dir (default work_dirs/<config name>) gets the resolved config.yaml, train.csv,
metrics.csv (one row per evaluation), TensorBoard events when tensorboard is installed,
last.pt, best.pt and the best model's save_pretrained export. --resume without a path
continues from <work dir>/last.pt.
"""

_EVALUATE_HELP = """Evaluate a checkpoint: accuracy, IoU, log-likelihood, partial observations.

CONFIG and the overrides set the data and evaluation; the model comes from the checkpoint (a
train ``.pt`` file or a save_pretrained folder), and so do the data settings it was trained
with (size, mean/std, ignore_index, MNIST's quadrants and binarize); another data.dataset
or model setting is logged as a warning.
The negative conditional log-likelihood (nats per image) uses importance sampling for models
with a recognition net (cvae, hybrid) and Monte Carlo otherwise; deterministic models are
exact. --partial adds the paper's Table 4 grid (drop 25/50/70% of 1/4/8 px blocks): the plain
prediction against the CVAE's iterative inference. For MNIST quadrant completion (Table 1) it
reports the negative CLL alone, by every estimator the model has: exact (NN), Monte Carlo
with eval.mc_samples, importance sampling with --num-samples; --partial, --iterations,
--prediction and --no-likelihood do not apply there and are refused. Prints a table, writes
JSON (default: eval_<split>.json beside the checkpoint; --out is checked before any work).
Not MNIST: the ECE of the mean of eval.calibration_samples samples' softmax and its reliability
diagram's bins are in the JSON; --reliability PNG also draws the diagram.
"""

_VISUALIZE_HELP = """Draw a sample grid from a trained checkpoint.

One row per image: input (occlusion outlined, --occlude), ground truth, prior-mean
prediction, K samples and a per-pixel uncertainty map (entropy of the mean sample). For MNIST
quadrant completion, the paper's Figure 3: truth, the NN's prediction (--baseline NN_CKPT, a
model of the same observed quadrants) and K CVAE samples; --occlude does not apply there, nor
--baseline elsewhere. --compare CKPT (one per flag, repeatable) draws other models beside
this one on the same images instead: the images and truths once, then one row per model
(not MNIST). CONFIG and the overrides set the data (root, split); the model and the data
settings it was trained with come from the checkpoint (a train ``.pt`` file or a
save_pretrained folder). Writes PNG (default: samples_<split>.png, with --compare
compare_<split>.png, beside the checkpoint).
"""

_DOWNLOAD_HELP = """Download and extract the paper's data sets from their official sites.

Files land in ROOT/<dataset>/, the folder the command prints: set data.root to that folder
(ROOT/<dataset>), or $CVAE_SEG_DATA to ROOT. MNIST files are checked against their published
MD5 sums; for the others the command prints their SHA-256 for your records. Downloads go to
a temporary name first and are renamed when complete.
"""


def _subparser(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=text.splitlines()[0],
        description=text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_model_inputs(parser: argparse.ArgumentParser) -> None:
    """The arguments evaluate and visualize share: a config, a checkpoint, overrides."""
    parser.add_argument("config", type=_existing_file, help="YAML config (data, evaluation)")
    parser.add_argument(
        "checkpoint", type=_existing_path, help="a train .pt file or a save_pretrained folder"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=/data")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if any)")


def _add_train(subparsers: Any) -> None:
    parser = _subparser(subparsers, "train", _TRAIN_HELP)
    parser.add_argument("config", type=_existing_file, help="YAML config")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=20")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CKPT")
    parser.add_argument("--seed", type=_non_negative_int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: GPU if any)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        default=1,
        help="training processes on this machine (DDP), started after the config is checked",
    )


def _add_evaluate(subparsers: Any) -> None:
    parser = _subparser(subparsers, "evaluate", _EVALUATE_HELP)
    _add_model_inputs(parser)
    parser.add_argument(
        "--num-samples", type=_positive_int, default=None, help="S for the likelihood"
    )
    parser.add_argument(
        "--prediction",
        choices=["mean", "average"],
        default=None,
        help="not MNIST: the prior mean's decoding or the average of samples",
    )
    parser.add_argument(
        "--no-likelihood",
        action="store_true",
        help="not MNIST (its report is the likelihood): skip the log-likelihood",
    )
    parser.add_argument(
        "--partial", action="store_true", help="not MNIST: Table 4 partial observations"
    )
    parser.add_argument(
        "--reliability", type=Path, default=None, metavar="PNG",
        help="not MNIST: draw the ECE's reliability diagram (eval.calibration_samples) here",
    )  # fmt: skip
    parser.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help=f"with --partial: iterations of the inference (default {PARTIAL_ITERATIONS})",
    )


def _add_visualize(subparsers: Any) -> None:
    parser = _subparser(subparsers, "visualize", _VISUALIZE_HELP)
    _add_model_inputs(parser)
    parser.add_argument("--num-samples", type=_positive_int, default=6)
    parser.add_argument("--num-images", type=_positive_int, default=6)
    parser.add_argument(
        "--occlude",
        type=_side_share,
        default=None,
        help="not MNIST: hide a square up to this share of the side (default: none)",
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument(
        "--baseline",
        type=_existing_path,
        default=None,
        help="MNIST: the NN checkpoint for Figure 3's NN column",
    )
    parser.add_argument(
        "--compare",
        action="append",
        type=_existing_path,
        default=None,
        metavar="CKPT",
        help="not MNIST: another checkpoint drawn beside the model on the same images (one "
        "row, named by its folder; trained on the same classes and image settings); repeat "
        "the flag for more",
    )


def _add_download(subparsers: Any) -> None:
    parser = _subparser(subparsers, "download", _DOWNLOAD_HELP)
    parser.add_argument("dataset", choices=["cub", "lfw", "mnist"])
    parser.add_argument("--root", type=Path, default=Path("data"))


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from cvae_seg.version import __version__

    parser = _Parser(
        prog=PROG,
        description="Conditional VAE heads for segmentation-models-pytorch: train, evaluate, "
        "draw samples, fetch the paper's data sets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for add in (_add_train, _add_evaluate, _add_visualize, _add_download):
        add(subparsers)
    return parser, dict(subparsers.choices)


def _check_together(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a flag that means something only beside another one: ignoring it would let the
    user believe it took effect. (Flags that depend on the data set are checked by the
    command, once the config says which data set it is.)"""
    if args.command != "evaluate":
        return
    if args.iterations is not None and not args.partial:
        parser.error("argument --iterations: applies only with --partial (it sets how many "
                     "iterations the partial-observation inference runs)")  # fmt: skip
    if args.partial and args.iterations is None:
        args.iterations = PARTIAL_ITERATIONS


def build_parser() -> argparse.ArgumentParser:
    """The ``cvae-seg`` parser, with one subparser per command (for --help and docs)."""
    return _build()[0]


def _resume_before_the_config(argv: list[str]) -> list[str]:
    """``train --resume configs/x.yaml``: the YAML file is the config, not the checkpoint to
    resume from (a checkpoint is never YAML), so --resume takes its default (the work dir's
    last.pt). Only when no YAML file came before it: then the config was given."""
    argv = list(argv)
    for index, token in enumerate(argv[:-1]):
        if token.endswith((".yaml", ".yml")):
            break
        if token == "--resume" and argv[index + 1].endswith((".yaml", ".yml")):
            argv[index] = "--resume=last"
            break
    return argv


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` into the arguments of one command (``args.command``).

    The subcommand's own parser reads its options and overrides intermixed (``key=value``
    before or after ``--flag``), as the tools always have; argparse cannot do that through
    subparsers, so the command name is split off first.
    """
    argv = list(argv)
    parser, subparsers = _build()
    if argv and argv[0] in subparsers:
        command = subparsers[argv[0]]
        args = command.parse_intermixed_args(_resume_before_the_config(argv[1:]))
        args.command, args.argv = argv[0], argv
        _check_together(command, args)
        return args
    return parser.parse_args(argv)  # --help, --version, or a usage error
