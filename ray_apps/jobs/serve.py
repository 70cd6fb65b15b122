"""Online inference: ``python -m ray_apps.jobs.serve up|down|status``.

Runs the same as ``ray-apps serve ...``: ``up`` starts (or updates) the Serve application on
the platform's cluster and prints its URL, ``down`` removes it, ``status`` prints its state.
"""

from __future__ import annotations

import argparse
import sys

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.jobs import run_job
from ray_apps.streaming.topics import ensure_topics


def add_serve_arguments(actions: argparse._SubParsersAction) -> None:
    """The ``up``, ``down`` and ``status`` sub-commands, shared with ``ray-apps serve``."""
    actions.add_parser(
        "up",
        help="start or update the Serve application and print its URL",
        description="Deploy the champion and challenger of serve.model_name behind the HTTP "
        "ingress on serve.host:serve.port (settings RAY_APPS_SERVE__...).",
    )
    actions.add_parser("down", help="remove the Serve application (frees its CPUs)")
    actions.add_parser("status", help="the application's and its deployments' state")


def run_action(args: argparse.Namespace, settings: Settings) -> str:
    """Run one ``serve`` action and return what to print."""
    # imported here: Serve and MLflow take seconds that `ray-apps --help` need not wait
    from ray_apps.serving.control import serve_down, serve_status, serve_up

    connect_ray(settings, log_to_driver=False)  # replica logs: the dashboard's Serve tab
    if args.action == "up":
        if settings.serve.publish_predictions:
            ensure_topics(settings)
        return serve_up(settings)
    if args.action == "down":
        return serve_down(settings)
    return serve_status(settings).render()


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serve_arguments(parser.add_subparsers(dest="action", required=True, metavar="ACTION"))


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.serve ACTION``."""
    return run_job("ray_apps.jobs.serve", __doc__, _add_arguments, run_action, argv)


if __name__ == "__main__":
    sys.exit(main())
