"""Entry point of the ``ray-apps`` command."""

from __future__ import annotations

import argparse
import signal
import sys

from ray_apps.cli import data, features, ingest, stack, sweep
from ray_apps.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="ray-apps", description="Build, tune and serve ML models over market data on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack, ingest, data, features, sweep):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``ray-apps`` command; user errors print one line and exit 2."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ray-apps ... | head` ends quietly
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except UserError as exc:
        print(f"ray-apps: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ray-apps: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
