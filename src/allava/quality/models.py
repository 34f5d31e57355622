"""Model references in QC configs: a hub id (`org/name`) or a local path."""
from __future__ import annotations

from pathlib import Path


def check_model(ref: str, op: str) -> str:
    """Fail with a readable message when `ref` names a local folder that is not there.

    A relative path such as `runs/quickstart/lm` also parses as a hub id; transformers then reports
    an unhelpful "Repo id must be in the form..." error, so a ref that exists nowhere on disk and
    has more than one `/`, or starts with `.` or `/`, is reported as a missing folder.
    """
    p = Path(ref)
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") >= 2
    if looks_local and not p.expanduser().exists():
        raise OSError(f"{op}: model folder {ref} not found (run `allava quickstart` for the offline models, "
                      f"or set `model:` to a hub id or local path)")
    return str(p.expanduser()) if looks_local else ref
