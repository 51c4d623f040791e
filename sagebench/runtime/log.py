"""sagebench's messages: the ``logging`` logger ``"sagebench"``, one line each.

Why ``logging``: users silence, redirect or collect sagebench's warnings the way they do for
every other library (``logging.getLogger("sagebench").setLevel(logging.ERROR)``). A handler of
our own prints them in the CLI's one-line form (``sagebench: warning: ...``) on the *current*
``sys.stderr`` (so notebooks and pytest's capture see them); it is installed once, on the
``"sagebench"`` logger only, and does not propagate to the root logger to avoid printing twice.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "sagebench"


class _CurrentStderr(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of the message."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; ignored
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"sagebench: {record.levelname.lower()}: {record.getMessage()}"


def get_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_Format())
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def warn(message: str) -> None:
    """One warning line (``sagebench: warning: ...``)."""
    get_logger().warning(message)


def info(message: str) -> None:
    """One information line (``sagebench: info: ...``)."""
    get_logger().info(message)
