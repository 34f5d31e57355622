"""Model references in QC configs: a hub id (`org/name`) or a local path."""
from __future__ import annotations

from allava.config import ConfigError
from allava.model.refs import local_model_path


def check_model(ref: str | None, op: str) -> str:
    """Fail with a readable message when `ref` is unset or names a local folder that is not there."""
    if not ref:
        raise ConfigError(f"{op}: no `model` set (a hub id or local path)")
    path = local_model_path(ref)
    if path is None:
        return ref
    if not path.exists():
        raise OSError(f"{op}: model folder {ref} not found (`allava quickstart --out DIR` makes the offline "
                      f"DIR/lm and DIR/clip; or set `model:` to a hub id or local path)")
    return str(path)
