"""The ``cvae-seg`` command: ``train``, ``evaluate``, ``visualize`` and ``download``.

    cvae-seg train configs/demo.yaml [--work-dir DIR] [--resume [CKPT]] [key.sub=value ...]
    cvae-seg evaluate CONFIG CHECKPOINT [--split val|test] [--partial] [--out FILE]
    cvae-seg visualize CONFIG CHECKPOINT [--num-images 6] [--occlude 0.3] [--out FILE]
    cvae-seg download {lfw,cub,mnist} [--root data]

``python tools/<command>.py ...`` runs the same code. `main` is the command's entry point (it
returns the exit status); `run` runs one subcommand in this process and returns its result,
for scripts and tests.

Exit status: 0 on success; 2 for a user error, printed as one line without a traceback (the
convention of argparse, click and git for "the command was used wrongly"); 1 when training
stops on a non-finite value; a bug propagates with its traceback. Torch and the models load
inside the subcommands, so ``cvae-seg --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from cvae_seg.cli.arguments import PROG, build_parser, parse
from cvae_seg.cli.errors import UserError, one_line, raised_reading_input, speaks_for_the_job

__all__ = ["UserError", "build_parser", "main", "run"]


def run(argv: Sequence[str]) -> Any:
    """Run one subcommand in this process and return what it made: train's result dict,
    evaluate's metrics, visualize's picture path, download's folder. Errors propagate (a
    usage error as SystemExit(2)); `main` is what turns them into an exit status."""
    return _execute(parse(argv))


def _execute(args: argparse.Namespace) -> Any:
    from cvae_seg.cli.commands import COMMANDS

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check from a command
    return COMMANDS[args.command](args)


@contextlib.contextmanager
def _user_warnings_in_one_line(command: str) -> Iterator[None]:
    """Show a UserWarning (ours about the user's settings, or smp's) as one line naming the
    command, as errors are shown: Python's default names the library file that raised it and
    prints its source line (for a config check, a line of pydantic's), which reads as a
    crash. Other categories keep Python's format."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, UserWarning):
            return default(message, category, filename, lineno, file, line)
        if speaks_for_the_job():
            text = " ".join(str(message).split())
            print(f"{PROG} {command}: warning: {text}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = default


def _run_reporting_user_errors(argv: Sequence[str]) -> int:
    args = parse(argv)  # a usage error exits here with argparse's status 2
    try:
        with _user_warnings_in_one_line(args.command):
            _execute(args)
    except UserError as error:
        return _report(args, "error", error, 2)
    except FloatingPointError as error:  # training diverged: not the user's typo, not a bug
        return _report(args, "stopped", error, 1)
    except Exception as error:
        if not raised_reading_input(error):
            raise
        return _report(args, "error", error, 2)
    return 0


def _report(args: argparse.Namespace, kind: str, error: BaseException, status: int) -> int:
    if speaks_for_the_job():
        message = one_line(error)
        print(f"{PROG} {args.command}: {kind}: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cvae-seg`` command: returns the exit status (0, 1 or 2; see the module doc).

    Under torchrun, torch's ``record`` wrapper writes a bug's traceback to the error file that
    torchrun's failure summary shows. It wraps the run only after user errors are handled, so
    that a typo in a key gets its one-line message there too, never a recorded traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return _run_reporting_user_errors(argv)
    from torch.distributed.elastic.multiprocessing.errors import record

    status = record(_run_reporting_user_errors)(argv)
    return 0 if status is None else status
