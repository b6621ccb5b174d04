"""Server logging: time, level and logger name to stderr.

Log lines name people and addresses (who connected, logged in, went offline) but
never message bodies, request parameters, passwords or keys.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TextIO

from common.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every log record at `level` or above to `stream` (stderr by default)."""
    name = level.upper()
    if name not in LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected exception's type and stack, but not its message.

    An exception's message can quote the data that caused it (a password, a message
    body); its type and the code path are what a maintainer needs.
    """
    stack = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("%s: %s\nTraceback (most recent call last):\n%s", what, type(exc).__name__, stack)
