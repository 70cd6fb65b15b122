"""What the entry points (``ray-apps``, ``python -m ray_apps.jobs.X``) make of an exception.

A user's mistake is one line on stderr and exit status 2, wherever it was raised: here, or in a
Ray task or actor (Ray wraps it in a ``RayTaskError`` whose text is the remote traceback). A
failure inside Ray that is not a user error is one line and exit status 1; its traceback is
printed only with ``RAY_APPS_DEBUG=1`` (and stays in the Ray worker's log). Anything else is a
bug: its traceback is printed as usual.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable

import ray.exceptions
from pydantic import ValidationError

from ray_apps.errors import UserError, validation_problems

DEBUG_VARIABLE = "RAY_APPS_DEBUG"
USER_ERROR_STATUS = 2
FAILURE_STATUS = 1
INTERRUPTED_STATUS = 130
_TASK_TITLE = re.compile(r"ray::([\w.<>-]+)\(")
_DEBUG_HINT = f"(set {DEBUG_VARIABLE}=1 for the traceback)"


def run_reporting(run: Callable[[], int]) -> int:
    """Calls ``run`` and returns its status; known errors print one line and return 2 or 1."""
    try:
        return run()
    except KeyboardInterrupt:
        print("ray-apps: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except Exception as exc:
        reported = describe(exc)
        if reported is None:
            raise
        line, status = reported
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            traceback.print_exception(exc, file=sys.stderr)
        print(f"ray-apps: {line}", file=sys.stderr)
        return status


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit status) for a user error or a Ray failure; None for anything else."""
    cause = remote_cause(exc)
    if isinstance(cause, UserError):
        return first_line(str(cause)), USER_ERROR_STATUS
    if isinstance(cause, ValidationError):
        return f"{cause.title}: {validation_problems(cause, limit=3)}", USER_ERROR_STATUS
    if isinstance(cause, ray.exceptions.RayActorError):
        return f"a Ray actor failed: {_kind(cause)} {_DEBUG_HINT}", FAILURE_STATUS
    if isinstance(cause, ray.exceptions.RayError):
        return f"Ray failed: {_kind(cause)} {_DEBUG_HINT}", FAILURE_STATUS
    if cause is not exc:
        where = _task_name(_innermost_task_error(exc))
        return f"{where} failed in a Ray task: {_kind(cause)} {_DEBUG_HINT}", FAILURE_STATUS
    return None


def remote_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, unwrapped from Ray's wrappers (else ``exc``)."""
    for _ in range(20):  # a task that called a task: wrappers nest
        if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
            exc = exc.cause
        elif type(exc).__module__.startswith("ray.") and exc.__cause__ is not None:
            exc = exc.__cause__  # e.g. Ray Data's UserCodeException over the task's error
        else:
            break
    return exc


def first_line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _kind(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(str(exc))}".rstrip(": ")


def _task_name(exc: BaseException) -> str:
    """The task's function (``OfflineStore.materialize``), from the error or its first line."""
    name = vars(exc).get("function_name")  # the dual class ray.get raises forwards attributes
    if name:
        return str(name)
    found = _TASK_TITLE.search(str(exc).split("\n", 1)[0])
    return found.group(1) if found else "a task"


def _innermost_task_error(exc: BaseException) -> BaseException:
    found = exc
    for _ in range(20):
        if isinstance(exc, ray.exceptions.RayTaskError):
            found = exc
        following = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc.__cause__
        if following is None:
            break
        exc = following
    return found
