"""Entry points for `ray job submit -- python -m ray_apps.jobs.<job>`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ray_apps.config import Settings, load_settings
from ray_apps.errors import UserError


def run_job(
    module: str,
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace, Settings], str],
    argv: list[str] | None = None,
) -> int:
    """Parses a job's arguments, runs it and prints its summary; user errors exit 2.

    Args:
        module: the job's module, e.g. ``ray_apps.jobs.sweep`` (its ``python -m`` name).
        doc: the module docstring; its first line is the description.
        add_arguments: adds the job's options (shared with its ``ray-apps`` sub-command).
        run: runs the parsed job and returns its summary text.
        argv: the arguments (default: the command line).
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        print(run(args, load_settings()))
    except UserError as exc:
        print(f"ray-apps: {exc}", file=sys.stderr)
        return 2
    return 0
