"""The exception types users see."""


class UserError(Exception):
    """A mistake the user can fix: printed as one line (no traceback), exit status 2."""
