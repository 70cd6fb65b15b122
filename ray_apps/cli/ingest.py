"""``ray-apps ingest``: load, validate and store bars."""

from __future__ import annotations

import argparse

from ray_apps.config import load_settings
from ray_apps.jobs.ingest import add_arguments, ingest, request_from_args


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``ingest`` sub-command."""
    parser = commands.add_parser(
        "ingest",
        help="load bars from a source into the offline store",
        description="Validate bars and store them in ClickHouse; rejected rows are quarantined "
        "with their reason. Ingesting the same data again leaves one copy. Files may use the "
        "common OHLCV layouts (column names in any case; Date/Datetime/timestamp/time for ts).",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    summary = ingest(request_from_args(args), load_settings())
    print(summary.render())
    return 0
