"""QC YAML: `ops: [{name, label?, min?, max?, thresholds?: {stat: {min, max}}, <settings>}]`.

`min` / `max` apply to the op's primary stat; `thresholds` to any of its stats. Everything else is
the op's settings, checked against its `Settings` dataclass (a typo is an error, not a default).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.config import ConfigError, from_dict, load_yaml
from allava.quality.base import OPS, Op, load_builtin_ops

RESERVED = ("name", "label", "min", "max", "thresholds", "report_only")


@dataclass
class Threshold:
    stat: str
    min: float | None = None
    max: float | None = None

    def fails(self, value: Any) -> bool:
        """True when a number is outside [min, max]. Missing / non-numeric / NaN = not applicable."""
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def describe(self) -> str:
        parts = ([f">= {self.min:g}"] if self.min is not None else []) + ([f"<= {self.max:g}"] if self.max is not None else [])
        return " and ".join(parts)


@dataclass
class OpSpec:
    """One entry of the `ops` list, built into an operator instance."""

    label: str
    op: Op
    thresholds: list[Threshold] = field(default_factory=list)
    report_only: bool = False  # stats nobody thresholds: computed only when asked (`--all-stats`)


@dataclass
class QCConfig:
    ops: list[OpSpec]
    examples: int = 5  # removed records shown per op in the report
    source: str = ""

    def active(self, all_stats: bool = False) -> list[OpSpec]:
        """The ops a run computes: report-only ones only when `all_stats` asks for them."""
        return [s for s in self.ops if all_stats or not s.report_only]


def _threshold(stat: str, spec: Any, where: str) -> Threshold:
    if not isinstance(spec, dict) or set(spec) - {"min", "max"}:
        raise ConfigError(f"{where}: a threshold is {{min: X, max: Y}}, got {spec!r}")
    for k in ("min", "max"):
        if spec.get(k) is not None and not isinstance(spec[k], (int, float)):
            raise ConfigError(f"{where}.{k}: expected a number, got {spec[k]!r}")
    return Threshold(stat, spec.get("min"), spec.get("max"))


def build_op(entry: dict[str, Any], where: str) -> OpSpec:
    load_builtin_ops()
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{where}: each op needs a `name`")
    name = entry["name"]
    if name not in OPS:
        raise ConfigError(f"{where}: unknown op {name!r}; known: {sorted(OPS)}")
    cls = OPS[name]
    known = sorted(set(RESERVED) | {f.name for f in dataclasses.fields(cls.Settings)})
    unknown = sorted(set(map(str, entry)) - set(known))
    if unknown:
        hints = [f"{k!r} -> {m[0]!r}" for k in unknown if (m := difflib.get_close_matches(k, known, n=1))]
        did = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ConfigError(f"{where} ({name}): unknown keys {unknown}{did}; known: {known}")
    settings = from_dict(cls.Settings, {k: v for k, v in entry.items() if k not in RESERVED}, where)
    for key, what in cls.required.items():
        if getattr(settings, key, None) in (None, ""):
            dotted = where.replace("[", ".").rstrip("]")
            raise ConfigError(f"{where} ({name}) needs `{key}:` ({what}); set it in the YAML or with "
                              f"--set {dotted}.{key}=PATH")
    thresholds = []
    if entry.get("min") is not None or entry.get("max") is not None:
        if not cls.primary:
            raise ConfigError(f"{where}: op {name!r} has no primary stat; use `thresholds: {{stat: {{min: ..}}}}`")
        thresholds.append(_threshold(cls.primary, {k: entry.get(k) for k in ("min", "max")}, where))
    for stat, spec in (entry.get("thresholds") or {}).items():
        thresholds.append(_threshold(stat, spec, f"{where}.thresholds.{stat}"))
    report_only = entry.get("report_only", False)
    if not isinstance(report_only, bool):
        raise ConfigError(f"{where}.report_only: expected true or false, got {report_only!r}")
    if report_only and thresholds:
        raise ConfigError(f"{where} ({name}): report_only ops decide nothing; remove `report_only` or its thresholds")
    return OpSpec(label=str(entry.get("label") or name), op=cls(settings), thresholds=thresholds,
                  report_only=report_only)


def parse_config(raw: dict[str, Any], source: str = "") -> QCConfig:
    unknown = set(raw) - {"ops", "examples"}
    if unknown:
        raise ConfigError(f"{source or 'qc config'}: unknown keys {sorted(unknown)}; known: ['examples', 'ops']")
    entries = raw.get("ops")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source or 'qc config'}: `ops` must be a non-empty list")
    specs = [build_op(e, f"ops[{i}]") for i, e in enumerate(entries)]
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"{source}: ops {dupes} appear twice; give each a distinct `label`")
    examples = raw.get("examples", 5)
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ConfigError(f"{source or 'qc config'}: examples must be a whole number >= 0, got {examples!r}")
    return QCConfig(specs, examples, source)


def load_config(path: str | Path, overrides: list[str] = ()) -> QCConfig:
    """A path, or a shipped QC config by name (`cheap`, `default`: configs/qc/)."""
    return parse_config(load_yaml(path, overrides, shipped="qc"), str(path))
