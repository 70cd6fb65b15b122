"""Compute and materialize features: ``python -m ray_apps.jobs.features compute|materialize``.

Runs the same as ``ray-apps features compute|materialize`` and as
``ray job submit -- python -m ray_apps.jobs.features ...``. This module only parses options
and wires: it connects to Ray, opens the stores and calls
:func:`ray_apps.features.compute.compute_features` or
:func:`ray_apps.stores.materialize.materialize_latest`.

- ``compute`` reads bars (the offline store or a CSV/Parquet file), runs one engine (``ray``,
  ``spark`` or ``incremental``) and writes ``symbol, ts`` plus the spec's columns to a Parquet
  file and/or the store's ``features`` table (keyed by spec version).
- ``materialize`` copies the newest stored feature row of each symbol to Redis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.features.compute import ENGINES, ComputeRequest, compute_features
from ray_apps.features.sources import STORE_INTERVAL, BarsInput
from ray_apps.features.spec import DEFAULT_SPEC_PATH, load_spec
from ray_apps.jobs import run_job
from ray_apps.stores.materialize import materialize_latest
from ray_apps.stores.offline_actor import offline_store
from ray_apps.stores.online import online_store

OPTIONS = {"path": "--input"}
"""Request fields whose option is not ``--`` and the field's name with dashes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``compute`` and ``materialize`` actions, shared by the CLI and this job."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    compute = actions.add_parser("compute", help="compute features with one engine")
    compute.add_argument("--spec", type=Path, default=DEFAULT_SPEC_PATH, help="feature spec")
    compute.add_argument("--engine", choices=sorted(ENGINES), default="ray", help="engine")
    where = compute.add_mutually_exclusive_group(required=True)
    where.add_argument("--input", type=Path, help="CSV or Parquet bars file")
    where.add_argument("--from-store", action="store_true", help="read bars from the store")
    compute.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="only these symbols")
    compute.add_argument(
        "--interval",
        help=f"bar interval (store input: default {STORE_INTERVAL}; a file: default its "
        "interval column, else the spacing of its timestamps)",
    )
    compute.add_argument("--output", type=Path, help="write the features to this .parquet file")
    compute.add_argument(
        "--to-store",
        action="store_true",
        help="upsert into the store's features table (the default with --from-store)",
    )
    compute.add_argument("--parallelism", type=int, help="most Ray Data read tasks")
    compute.add_argument("--spark-executors", type=int, default=1, help="RayDP executors")
    compute.add_argument(
        "--spark-executor-memory",
        default="2GB",
        help="heap per RayDP executor, e.g. 6GB (about 1 GB per million feature rows an "
        "executor holds, plus 1 GB)",
    )
    materialize = actions.add_parser(
        "materialize", help="copy the newest stored features of each symbol to Redis"
    )
    materialize.add_argument("--spec", type=Path, default=DEFAULT_SPEC_PATH)
    materialize.add_argument("--symbols", nargs="+", metavar="SYMBOL")
    materialize.add_argument("--interval", default=STORE_INTERVAL)


def compute_request(args: argparse.Namespace) -> ComputeRequest:
    """The compute request the parsed options describe.

    Raises:
        UserError: an option's value is invalid (one line naming each such option).
    """
    try:
        return ComputeRequest(
            engine=args.engine,
            source=BarsInput(path=args.input, symbols=args.symbols, interval=args.interval),
            output=args.output,
            to_store=args.to_store or args.from_store,
            parallelism=args.parallelism,
            spark_executors=args.spark_executors,
            spark_executor_memory=args.spark_executor_memory,
        )
    except ValidationError as error:
        raise UserError(_option_problems(error)) from None


def _option_problems(error: ValidationError) -> str:
    """Each problem under the option that set its field: ``--parallelism: ...; --interval: ...``."""
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][-1]) if problem["loc"] else "input"
        option = OPTIONS.get(field, "--" + field.replace("_", "-"))
        lines.append(f"{option}: {problem['msg']}")
    return "; ".join(lines)


def run_action(args: argparse.Namespace, settings: Settings) -> str:
    """Runs the parsed action; returns its summary text."""
    spec = load_spec(args.spec)
    if args.action == "compute":
        request = compute_request(args)
        connect_ray(settings)
        needs_store = request.source.path is None or request.to_store
        store = offline_store(settings) if needs_store else None
        return compute_features(request, spec, store).render()
    connect_ray(settings)
    summary = materialize_latest(
        offline_store(settings),
        online_store(settings),
        spec.version,
        spec.fingerprint,
        spec.columns,
        args.interval,
        args.symbols,
    )
    return summary.render()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.features ...``."""
    return run_job("ray_apps.jobs.features", __doc__, add_arguments, run_action, argv)


if __name__ == "__main__":
    sys.exit(main())
