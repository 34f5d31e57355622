"""Model references given by users: a hub id (`org/name`) or a local path."""
from __future__ import annotations

from pathlib import Path


def local_model_path(ref: str) -> Path | None:
    """The folder `ref` names when it reads as a local path (starts with `.`, `/` or `~`, or has more
    than one `/`), else None for a hub id. A relative path such as `runs/quickstart/lm` also parses as
    a hub id, and transformers then reports an unhelpful "Repo id must be in the form..." error, so
    callers check such a folder exists themselves and say so in one line."""
    if ref.startswith((".", "/", "~")) or ref.count("/") >= 2:
        return Path(ref).expanduser()
    return None
