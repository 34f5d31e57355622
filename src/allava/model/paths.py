"""Model names: a local folder or a hub id, told apart before anything is loaded.

A path that cannot be a hub id (absolute, ``./``/``~``, more than one ``/``) and does not exist is
reported as a missing folder, not as transformers' "Repo id must be in the form ..."; a hub id that
cannot be fetched (no network, ``HF_HUB_OFFLINE=1``) names the model and says how to use a local
folder instead.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from allava.config import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(name: str) -> bool:
    """True when `name` can only be a filesystem path."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..")
            or os.sep in name.replace("/", "", 1) or not HUB_ID.match(name) or Path(name).exists())


def check_model_path(name: str, what: str = "model") -> None:
    """Refuse a local-looking model path that does not exist, and a folder that holds no model."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what}: expected a local folder or a hub id, got {name!r}")
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"{what}: folder {name} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{what}: {name} is a file, not a model folder")
    if not (path / "config.json").exists():  # FileNotFoundError: an OSError, still a one-line user error
        raise FileNotFoundError(f"{what}: {name} is not a model folder (no config.json)")


def hub_error(name: str, what: str, error: BaseException) -> ConfigError:
    """One line for a model that could not be fetched from the hub, naming it and the fix."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
    return ConfigError(f"{what}: cannot load {name!r} ({where}: {reason[:160]}); download it once, or "
                       f"point {what} at a local folder (e.g. one saved by save_pretrained)")
