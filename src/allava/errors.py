"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""
from __future__ import annotations

from allava.config import ConfigError
from allava.data.records import DataError
from allava.data.tokenize import EncodeError

# OSError covers a model path or hub id that cannot be found or read.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, EncodeError, OSError)
