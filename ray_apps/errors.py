"""The exception types users see, and how a validation error reads in one line."""

from pydantic import ValidationError


class UserError(Exception):
    """A mistake the user can fix: printed as one line (no traceback), exit status 2."""


def validation_problems(error: ValidationError, limit: int | None = None, root: str = "") -> str:
    """``field.path: message`` of each problem (the first ``limit``), joined by ``; ``.

    Args:
        error: pydantic's error.
        limit: most problems listed (all when None).
        root: the name shown for a problem of the whole object (an empty field path).
    """
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or root}: {problem['msg']}"
        for problem in error.errors()[:limit]
    )
