"""Model references in QC configs: a hub id (`org/name`) or a local path."""
from __future__ import annotations

from allava.model.refs import local_model_path


def check_model(ref: str, op: str) -> str:
    """Fail with a readable message when `ref` names a local folder that is not there."""
    path = local_model_path(ref)
    if path is None:
        return ref
    if not path.exists():
        raise OSError(f"{op}: model folder {ref} not found (run `allava quickstart` for the offline models, "
                      f"or set `model:` to a hub id or local path)")
    return str(path)
