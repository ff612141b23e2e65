"""YAML config files into a validated `Config`: ``_base_`` files merged underneath, dotted
``key.sub=value`` overrides, a key given twice refused, and each problem as one line that
names the file, the line or the dotted key.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cvae_seg.config.schema import Config

__all__ = ["apply_overrides", "load_config", "read_yaml_config", "validate_config"]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values parse as YAML (``1e-3``, ``[1, 2]``, ``null``)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r} must look like key.sub=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {override!r}: {part} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error)
            raise ValueError(
                f"override {override!r}: the value of {key} is not valid YAML ({problem}); "
                "quote strings and close brackets, e.g. train.betas=[0.9,0.99]"
            ) from None
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base`` (sections merge, values replace)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML loading
    keeps the last value without a word, so a config would run with a setting its reader
    did not see)."""


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


def _unique_key_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<": yaml's merge key, not a setting
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first_line.get(key)
        except TypeError:  # an unhashable key: let yaml say so
            continue
        if earlier is not None:
            raise _DuplicateKey(
                problem=f"duplicate key {key!r} (first given on line {earlier + 1})",
                problem_mark=key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_key_mapping
)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; errors name the file and the line, in one line."""
    with open(path, encoding="utf-8") as handle:
        try:
            return yaml.load(handle, Loader=_UniqueKeyLoader)
        except UnicodeDecodeError:
            raise ValueError(
                f"config file {path} is not UTF-8 text; expected a YAML config such as "
                "configs/demo.yaml (a checkpoint goes to --resume or to evaluate)"
            ) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            if isinstance(error, _DuplicateKey):
                raise ValueError(f"config file {path}{where}: {error.problem}") from None
            parts = [getattr(error, "context", None), getattr(error, "problem", None)]
            detail = ": ".join(p for p in parts if p) or str(error)
            raise ValueError(f"config file {path}{where}: not valid YAML ({detail})") from None


def read_yaml_config(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict, with its ``_base_`` file (relative to it) merged underneath.

    An empty file, a key given twice and a YAML syntax error are refused with the file (and
    line) named.
    """
    path = Path(path)
    named_by = f" (the _base_ of {_seen[-1]})" if _seen else ""
    if path.is_dir():
        raise IsADirectoryError(
            f"config file {path}{named_by} is a folder; expected a YAML file such as "
            "configs/demo.yaml"
        )
    if not path.is_file():
        raise FileNotFoundError(f"config file {path}{named_by} does not exist")
    if path.resolve() in _seen:
        raise ValueError(f"config file {path} includes itself through _base_")
    data = _read_yaml(path)
    if data is None:
        raise ValueError(
            f"config file {path} is empty; expected sections such as model, data and train "
            "(configs/demo.yaml is a complete example)"
        )
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: _base_ must name one config file (relative to it), got {base!r}")
    return _merge(read_yaml_config(path.parent / base, (*_seen, path.resolve())), data)


def _describe(error: dict[str, Any], root: type[BaseModel]) -> str:
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        section: Any = root
        for part in error["loc"][:-1]:
            section = section.model_fields[str(part)].annotation
        valid = sorted(section.model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        return f"{path}: unknown key{guess}; valid keys: {', '.join(valid)}"
    if error["type"] == "value_error":  # our own checks: their message names the value
        return f"{path}: {error['ctx']['error']}" if path else str(error["ctx"]["error"])
    return f"{path}: {error['msg']} (got {error.get('input')!r})"


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Read a YAML config (or the defaults), apply overrides, validate."""
    if isinstance(overrides, str):  # would be read one character at a time
        raise TypeError(
            f"overrides must be a list of 'key.sub=value' strings, got the string {overrides!r}; "
            f"write [{overrides!r}]"
        )
    data = read_yaml_config(path) if path is not None else {}
    source = "defaults" if path is None else str(path)
    return validate_config(apply_overrides(data, overrides or []), source)


def validate_config(data: Any, source: str) -> Config:
    """``data`` (a dict, as read from YAML or a saved run) as a `Config`; a problem is a
    one-line ValueError that starts with ``source`` and names each key."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(_describe(e, Config) for e in error.errors())
        raise ValueError(f"{source}: {problems}") from None
