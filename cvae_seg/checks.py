"""Argument checks shared by the model, likelihood, evaluation and metric modules.

Counts and sizes reach torch as tensor shapes and loop bounds, where a float, a string or a
bool fails deep inside (or, for True, passes silently as 1). One check with one message keeps
every entry point saying the same thing about the same mistake. Imports nothing heavy, so
any module of the package may use it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

__all__ = ["integer_at_least", "integers_at_least"]


def _expected(minimum: int, plural: bool = False) -> str:
    if minimum == 1:
        return "positive integers" if plural else "a positive integer"
    return f"integers >= {minimum}" if plural else f"an integer >= {minimum}"


def _is_integer_at_least(value: object, minimum: int) -> bool:
    # numbers.Integral takes int and numpy integers alike; bool is an int subclass but a flag
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def integer_at_least(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as a Python int, or a ``ValueError`` naming ``name`` and what was expected."""
    if not _is_integer_at_least(value, minimum):
        raise ValueError(f"{name} must be {_expected(minimum)}, got {value!r}")
    return int(value)  # type: ignore[arg-type]  # checked Integral above


def integers_at_least(name: str, values: object, minimum: int = 1) -> list[int]:
    """A non-empty list or tuple of such integers, as a list of Python ints."""
    items = values if isinstance(values, Sequence) and not isinstance(values, str) else None
    if not items or not all(_is_integer_at_least(v, minimum) for v in items):
        raise ValueError(
            f"{name} must be a non-empty list of {_expected(minimum, plural=True)}, got {values!r}"
        )
    return [int(v) for v in items]
