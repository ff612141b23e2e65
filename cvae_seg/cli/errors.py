"""Where a user's mistake ends and a bug begins, for the ``cvae-seg`` command."""

from __future__ import annotations

import os
import traceback

__all__ = ["UserError", "one_line", "raised_reading_input", "speaks_for_the_job"]


class UserError(Exception):
    """A mistake in what the user gave the command (a flag, a file, a setting): the command
    prints the message alone and exits with status 2."""


# Where the user-error boundary lies, and why. Our library reports bad input the way Python
# libraries do, as ValueError / TypeError / OSError with a message that names the thing at
# fault (and the API must keep doing so for Python callers). Such an exception counts as the
# user's mistake on the command line only when it was raised while reading or checking what
# the user named: the config and its overrides, a checkpoint or a pretrained folder, a data
# set, the device. The traceback tells that apart: it passes through one of the reading
# modules below, or through a function of ours named as a reader (load_*, read_*, check_*). The
# same exception type raised anywhere else (inside the model, the training step, the
# metrics) is a bug and keeps its traceback, as does every other exception type. This is the
# line that pip (its InstallationError family) and click (UsageError) draw with classes of
# their own; drawing it by origin lets the library keep raising the builtin types its API
# promises.
_READING_MODULES = (
    "cvae_seg.config",
    "cvae_seg.data",
    "cvae_seg.hub",
    "cvae_seg.registry",
    "cvae_seg.training.build",
    "cvae_seg.training.checkpoint",
    "cvae_seg.training.loading",
    "cvae_seg.training.runtime",
)
_READER_PREFIXES = ("load_", "read_", "check_", "_load_", "_read_", "_check_")
_INPUT_ERRORS = (ValueError, TypeError, OSError)


def raised_reading_input(error: BaseException) -> bool:
    """Whether ``error`` is a user error by the rule above (yaml's syntax errors included)."""
    kind_of_input_error = isinstance(error, _INPUT_ERRORS) or type(error).__module__.startswith(
        "yaml"
    )
    if not kind_of_input_error:
        return False
    for frame, _ in traceback.walk_tb(error.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module.startswith(_READING_MODULES):
            return True
        if module.startswith("cvae_seg.") and frame.f_code.co_name.startswith(_READER_PREFIXES):
            return True
    return False


_LONGEST = 600  # characters of a message; the rest of a 30-line size-mismatch list is noise


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line: a YAML syntax error as its problem and the line
    it is in (yaml names only "<unicode string>" and draws a caret over two lines), anything
    else with its lines joined and cut at a length a terminal shows whole."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None and getattr(error, "problem", None):
        lines = (getattr(mark, "buffer", None) or "").rstrip("\0").splitlines()
        text = lines[mark.line].strip() if mark.line < len(lines) else ""
        return (
            f"not valid YAML: {error.problem} at line {mark.line + 1}, column {mark.column + 1}"
            f" of {text!r}"
        )
    text = ""
    for line in filter(None, (line.strip() for line in str(error).splitlines())):
        text += (" " if not text or text.endswith(":") else "; ") + line
    text = text.strip()
    return text if len(text) <= _LONGEST else text[: _LONGEST - 4] + " ..."


def speaks_for_the_job() -> bool:
    """Whether this process prints a user error: every process alone, the first under torchrun.

    A user error comes from what all processes share (the flags, the config, the files), so
    every rank meets the same one; printing it once keeps it one message. The other ranks
    still exit with status 2, which torchrun's summary lists.
    """
    return os.environ.get("RANK", "0") == "0"
