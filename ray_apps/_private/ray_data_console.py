"""Ray Data's console output for a command-line driver: its warnings, not its errors.

Ray Data logs its progress at INFO and, when a task fails, the error (often with a traceback)
to the driver's console, before the exception itself reaches the command, which prints it as
one line. Everything stays in the session's ``logs/ray-data/ray-data.log``; only the console
is quieted.
"""

from __future__ import annotations

import logging

from ray.data._internal.logging import SessionFileHandler


def _warning_only(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR and record.exc_info is None


def quiet_ray_data_console() -> None:
    """Ray Data's console handler shows its warnings only (errors arrive as exceptions)."""
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, SessionFileHandler) and _warning_only not in handler.filters:
            handler.setLevel(logging.WARNING)
            handler.addFilter(_warning_only)
