"""YAML recipes into dataclasses, with ``key=value`` overrides from the command line.

``stages.stage1.lr=1e-4`` sets a nested key; values are parsed as YAML (numbers, booleans, lists).
Unknown keys are errors, so a typo never silently trains with defaults.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_yaml(path: str | Path, overrides: list[str] = ()) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return apply_overrides(raw, list(overrides))


def from_dict(cls, data: Any, where: str = ""):
    """Build a (nested) dataclass from plain data, checking keys and list/dict element types."""
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _convert(hint, value, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [from_dict(args[0], v, f"{where}[{i}]") for i, v in enumerate(value or [])]
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return {k: from_dict(args[1], v, f"{where}.{k}") for k, v in (value or {}).items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    return _scalar(hint, value, where)


def _scalar(hint, value, where: str):
    """Numbers written as strings (YAML reads ``3e-3`` as a string) become numbers; a value that
    cannot be the declared type is an error naming the key."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None or not any(k in (int, float) for k in kinds) or isinstance(value, (int, float)):
        return value
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(value)
            except (TypeError, ValueError):
                pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")
