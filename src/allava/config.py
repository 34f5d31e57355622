"""YAML recipes into dataclasses, with ``key=value`` overrides from the command line.

``stages.stage1.lr=1e-4`` sets a nested key; values are parsed as YAML (numbers, booleans, lists).
Unknown keys are errors, so a typo never silently trains with defaults; so are values of the wrong
type (a string where a list is declared, ``maybe`` for a boolean), caught when the config is loaded
rather than deep inside a run. A dataclass may define ``check(self)`` raising ``ValueError`` for
rules between values (a positive batch size); ``from_dict`` calls it and names the section.
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


def _shipped_configs() -> Path:
    """The configs/ folder shipped as package data (`src/allava/configs` links to the repository's
    `configs/`; a wheel holds a copy), found through importlib.resources so `pip install .` and a
    wheel find the same files as a checkout: `--config cheap` finds configs/qc/cheap.yaml from anywhere."""
    from importlib.resources import files

    return Path(str(files("allava") / "configs"))


SHIPPED_CONFIGS = _shipped_configs()


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each dotted ``key=value``; a step into a list must be an index in range, and a step
    into a number or string is refused (both would otherwise end in a traceback or a silent no-op)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty part in the key {key!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        node: Any = raw
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise ConfigError(f"{where}: {part!r} is not an index of the list ({len(node)} entries; "
                                      f"use {where}.0 ... {where}.{max(len(node) - 1, 0)})")
                index = int(part)
                if index >= len(node):
                    raise ConfigError(f"{where}: index {index} out of range ({len(node)} entries)")
                if last:
                    node[index] = parsed
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = parsed
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"{where}: is a value ({_describe(node)}), not a section; "
                                  f"cannot set {'.'.join(parts[depth:])!r} inside it")
    return raw


def resolve_config(path: str | Path, shipped: str = "") -> Path:
    """A path as given, or a shipped config by name (``cheap`` = ``configs/<shipped>/cheap.yaml``;
    ``configs/qc/cheap.yaml`` also resolves from outside the repository), so a command works from
    any folder, not only the repository root."""
    path = Path(path)
    if path.exists():
        return path
    folder = SHIPPED_CONFIGS / shipped
    candidates = [SHIPPED_CONFIGS.parent / path] if not path.is_absolute() else []
    if len(path.parts) == 1:
        candidates += [folder / path, folder / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    hint = f"; shipped configs (give a name or a path): {', '.join(names)}" if names else ""
    raise ConfigError(f"{path}: no such config file{hint}")


def load_yaml(path: str | Path, overrides: list[str] = (), shipped: str | None = None) -> dict:
    """`shipped`: the configs/ sub-folder to look in when `path` is a name (None: paths only)."""
    path = resolve_config(path, shipped) if shipped is not None else Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return apply_overrides(raw, list(overrides))


def from_dict(cls, data: Any, where: str = ""):
    """Build a (nested) dataclass from plain data, checking keys and the declared types."""
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {sorted(map(str, unknown))}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{where or cls.__name__}: missing required keys {missing}") from None
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"{where + '.' if where else ''}{e}") from None
    return obj


def _convert(hint, value, where: str):
    if hint is Any or hint is typing.Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _convert(members[0], value, where)
        return _scalar(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            if value is None:
                return []
            raise ConfigError(f"{where}: expected a list, e.g. [{_describe(value)}], got {_describe(value)}")
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            if value is None:
                return {}
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _convert(inner, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        return tuple(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {_describe(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    return _scalar(hint, value, where)


def _scalar(hint, value, where: str):
    """Numbers written as strings (YAML reads ``3e-3`` as a string) become numbers; a value that
    cannot be the declared type is an error naming the key."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = tuple(k for k in kinds if k is not type(None))
    if value is None:
        return value  # None for a non-optional key: the dataclass default logic or the user's code decides
    if any(k is Any for k in kinds) or not all(isinstance(k, type) for k in kinds):
        return value
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, tuple(kinds)):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds:
        return float(value)
    if isinstance(value, float) and value.is_integer() and int in kinds:
        return int(value)
    if isinstance(value, str):
        for kind in (int, float):
            if kind in kinds:
                try:
                    return kind(value)
                except ValueError:
                    pass
    if str in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    names = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(k, k.__name__)
                        for k in kinds)
    if set(kinds) <= {int, float}:
        names = "a number" if float in kinds else "an integer"
    raise ConfigError(f"{where}: expected {names}, got {_describe(value)}")
