"""The settings of one `allava serve` process, in one dataclass (filled by the CLI or by tests)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from allava.config import ConfigError

LOOPBACK_NAMES = ("localhost",)


@dataclass
class ServeConfig:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None  # default: the model folder's name
    api_key_env: str | None = None
    insecure_no_key: bool = False
    max_batch_size: int = 8
    batch_window_ms: float = 50.0  # the longest the first request of a burst waits for the rest
    max_queue: int = 64  # requests waiting or running; beyond it: 429
    no_prefix_cache: bool = False  # prefill every prompt whole (default: the shared template head is cached)
    prefill_tokens: int = 4096  # prompt tokens prefilled per iteration, at most (a longer prompt goes alone)
    max_new_tokens: int = 256  # default and upper bound of max_tokens
    image_root: Path | None = None  # file:// URLs are allowed only below it
    allow_remote_images: bool = False
    remote_timeout_s: float = 10.0
    max_body_bytes: int = 20 << 20
    max_image_bytes: int = 10 << 20
    max_image_pixels: int = 4096 * 4096
    max_images: int = 4  # images in one conversation
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None  # torch CPU threads (default: torch's own choice)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        for key in ("max_batch_size", "max_queue", "prefill_tokens", "max_new_tokens", "max_body_bytes", "max_image_bytes",
                    "max_image_pixels", "max_images"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.batch_window_ms < 0 or self.remote_timeout_s <= 0:
            raise ConfigError("--batch-window-ms must not be negative and --remote-timeout-s must be positive")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port {self.port}: not a TCP port")
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
            if not self.image_root.is_dir():
                raise ConfigError(f"--image-root {self.image_root}: not a folder")
            self.image_root = self.image_root.resolve()
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ConfigError(f"--api-key-env {self.api_key_env}: the environment variable is not set or empty")
        if not self.api_key_env and not is_loopback(self.host) and not self.insecure_no_key:
            raise ConfigError(f"--host {self.host} is reachable from other machines: set a key with "
                              "--api-key-env VAR, or say --insecure-no-key to serve without one")

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model).name


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
