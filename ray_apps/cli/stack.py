"""``ray-apps stack up | down | status | logs | env``."""

from __future__ import annotations

import argparse
import time

from ray_apps._private import processes
from ray_apps.cli._table import format_table
from ray_apps.config import load_settings
from ray_apps.errors import UserError
from ray_apps.stack import stack_down, stack_env, stack_status, stack_up
from ray_apps.stack.manager import SERVICE_TYPES, ServiceStatus, services
from ray_apps.stack.ray_head import RayHead


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``stack`` sub-commands."""
    parser = commands.add_parser("stack", help="start, stop and inspect the local services")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("up", help="start every service (idempotent)").set_defaults(handler=_up)
    sub.add_parser("down", help="stop the services this stack started").set_defaults(handler=_down)
    sub.add_parser("status", help="each service, URL, pid, health").set_defaults(handler=_status)
    logs = sub.add_parser("logs", help="the last lines of a service's log")
    logs.add_argument("service", choices=[kind.name for kind in SERVICE_TYPES])
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.set_defaults(handler=_logs)
    sub.add_parser(
        "env", help='shell exports for `ray job submit`: eval "$(ray-apps stack env)"'
    ).set_defaults(handler=_env)


def _up(args: argparse.Namespace) -> int:
    settings = load_settings()
    started = time.monotonic()
    print(f"state folder: {settings.state_dir}")
    rows = stack_up(settings)
    print(f"stack up in {time.monotonic() - started:.1f} s\n")
    _print_status(rows)
    return 0


def _down(args: argparse.Namespace) -> int:
    stack_down(load_settings())
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = stack_status(load_settings())
    _print_status(rows)
    return 0 if all(r.state != "running, unhealthy" for r in rows) else 1


def _logs(args: argparse.Namespace) -> int:
    settings = load_settings()
    svc = next(s for s in services(settings) if s.name == args.service)
    if not svc.log_path.is_file():
        raise UserError(f"no log for {svc.name} yet at {svc.log_path}; run `ray-apps stack up`")
    print(processes.tail(svc.log_path, args.lines))
    if isinstance(svc, RayHead):
        print(f"\n(Ray's own logs: {svc.temp_dir / 'session_latest' / 'logs'})")
    return 0


def _env(args: argparse.Namespace) -> int:
    for key, value in stack_env(load_settings()).items():
        print(f"export {key}={value}")
    return 0


def _print_status(rows: list[ServiceStatus]) -> None:
    table = [
        (r.name, r.state, r.url, r.pid or "-", f"{r.rss_mb:.0f}" if r.rss_mb else "-") for r in rows
    ]
    print(format_table(("service", "state", "url", "pid", "rss MiB"), table))
