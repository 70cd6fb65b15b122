"""Entry point of the ``ray-apps`` command."""

from __future__ import annotations

import argparse
import signal
import sys

from ray_apps._private.entry import run_reporting
from ray_apps.cli import data, features, ingest, serve, stack, stream, sweep


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered (no settings are read)."""
    parser = argparse.ArgumentParser(
        prog="ray-apps", description="Build, tune and serve ML models over market data on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack, ingest, data, features, sweep, stream, serve):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``ray-apps`` command; a user error prints one line and exits 2.

    Settings are read only when a command runs, so ``--help`` works even with a bad one. An
    error raised in a Ray task or actor is unwrapped: a user error still reads as one line.
    """
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ray-apps ... | head` ends quietly
    args = build_parser().parse_args(argv)
    return run_reporting(lambda: args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
