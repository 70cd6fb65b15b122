"""Entry points for `ray job submit -- python -m ray_apps.jobs.<job>`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ray_apps._private.entry import run_reporting
from ray_apps.config import Settings, load_settings


def run_job(
    module: str,
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace, Settings], str],
    argv: list[str] | None = None,
) -> int:
    """Parses a job's arguments, runs it and prints its summary; user errors exit 2.

    Settings are read only once the arguments parsed (``--help`` works with a bad setting); a
    user error raised in a Ray task or actor of the job is one line too.

    Args:
        module: the job's module, e.g. ``ray_apps.jobs.sweep`` (its ``python -m`` name).
        doc: the module docstring; its first line is the description.
        add_arguments: adds the job's options (shared with its ``ray-apps`` sub-command).
        run: runs the parsed job and returns its summary text.
        argv: the arguments (default: the command line).
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)

    def run_and_print() -> int:
        print(run(args, load_settings()))
        return 0

    return run_reporting(run_and_print)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)
