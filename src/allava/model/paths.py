"""Model names: a local folder or a hub id, told apart before anything is loaded.

A path that cannot be a hub id (absolute, ``./``/``~``, more than one ``/``) and does not exist is
reported as a missing folder, not as transformers' "Repo id must be in the form ..."; a hub id that
cannot be fetched (no network, ``HF_HUB_OFFLINE=1``) names the model and says how to use a local
folder instead. Without network that is known after one short connection attempt, not after
huggingface_hub's minute of retries; a model already in the cache is then loaded from it.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from allava.config import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(name: str) -> bool:
    """True when `name` can only be a filesystem path."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..")
            or os.sep in name.replace("/", "", 1) or not HUB_ID.match(name) or Path(name).exists())


def check_model_path(name: str, what: str = "model") -> None:
    """Refuse a local-looking model path that does not exist, a folder that holds no model, and a hub
    id that can be neither downloaded (the hub unreachable) nor found in the local cache."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what}: expected a local folder or a hub id, got {name!r}")
    if not looks_local(name):
        check_hub(name, what)
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"{what}: folder {name} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{what}: {name} is a file, not a model folder")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():  # FileNotFoundError: an OSError, still a one-line user error
        raise FileNotFoundError(f"{what}: {name} is not a model folder (no config.json)")


def hub_error(name: str, what: str, error: BaseException) -> ConfigError:
    """One line for a model that could not be fetched from the hub, naming it and the fix."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
    return ConfigError(f"{what}: cannot load {name!r} ({where}: {reason[:160]}); download it once, or "
                       f"point {what} at a local folder (e.g. one saved by save_pretrained)")


HUB_PROBE_TIMEOUT_S = 3.0  # one TCP connection; huggingface_hub's own retries take about a minute
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub endpoint (``HF_ENDPOINT``) cannot be reached, or None when it can. One short TCP
    connection; not tried behind a proxy (the proxy, not us, connects to the hub)."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or type(e).__name__}"
    return None


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _go_offline() -> None:
    """Use the local cache at once (as HF_HUB_OFFLINE=1 does) instead of retrying an unreachable hub."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    for mod in ("huggingface_hub.constants", "huggingface_hub.utils._http"):
        if hasattr(sys.modules.get(mod), "HF_HUB_OFFLINE"):
            setattr(sys.modules[mod], "HF_HUB_OFFLINE", True)


def check_hub(name: str, what: str) -> None:
    """A hub id with no network: one line at once, naming the model and the local-folder fix (was a
    minute of retries, then a message without the model). A cached model loads from the cache."""
    if _offline():
        return
    reason = hub_unreachable()
    if reason is None:
        return
    if _cached(name):
        _go_offline()
        return
    raise ConfigError(f"{what}: cannot load {name!r}: the hub cannot be reached ({reason}) and the model is not "
                      f"in the local cache; connect once to download it, or point {what} at a local folder "
                      "(e.g. one saved by save_pretrained)")
