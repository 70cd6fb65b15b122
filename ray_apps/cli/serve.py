"""``ray-apps serve up|down|status``."""

from __future__ import annotations

import argparse

from ray_apps.config import load_settings
from ray_apps.jobs.serve import add_serve_arguments, run_action


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command group."""
    parser = commands.add_parser(
        "serve", help="online inference: the Ray Serve application on the local stack"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_serve_arguments(actions)
    for name in ("up", "down", "status"):
        actions.choices[name].set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    print(run_action(args, load_settings()))
    return 0
