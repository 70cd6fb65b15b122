"""Ingest bars into the offline store: ``python -m ray_apps.jobs.ingest --source SOURCE ...``.

Runs the same as ``ray-apps ingest`` and as ``ray job submit -- python -m ray_apps.jobs.ingest``:
connects to Ray, opens the offline-store actor and runs ``marketdata.ingest.run_ingest``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.jobs import positive_int, run_job
from ray_apps.marketdata.ingest import Echo, IngestRequest, IngestSummary, run_ingest
from ray_apps.marketdata.loaders import CSV_CHUNK_ROWS
from ray_apps.marketdata.sources import SOURCE_FORMS
from ray_apps.stores.offline_actor import OfflineStoreHandle, offline_store


def ingest(request: IngestRequest, settings: Settings, echo: Echo = print) -> IngestSummary:
    """Run one ingest on the configured cluster and offline store."""

    def open_store() -> OfflineStoreHandle:
        connect_ray(settings)
        return offline_store(settings)

    return run_ingest(request, open_store, echo)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingest options, shared by ``ray-apps ingest`` and this job's entry point."""
    parser.add_argument("--source", required=True, help=f"one of: {SOURCE_FORMS}")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="keep only these symbols")
    parser.add_argument(
        "--symbol",
        help="the symbol of every row of a CSV/Parquet file without a symbol column "
        "(e.g. a Date,Open,High,Low,Close,Adj Close,Volume price download); "
        "Adj Close is dropped: the bars keep traded prices",
    )
    parser.add_argument("--start", type=_utc_time, help="keep bars at or after this time (UTC)")
    parser.add_argument("--end", type=_utc_time, help="keep bars before this time (UTC)")
    parser.add_argument(
        "--interval",
        help="bar interval of a file without an interval column "
        "(default: inferred from its timestamps)",
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic sources: random seed")
    parser.add_argument(
        "--correlation",
        type=float,
        default=0.3,
        help="synthetic sources: pairwise return correlation",
    )
    parser.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=CSV_CHUNK_ROWS,
        metavar="N",
        help="files and packaged data: rows read and validated at a time "
        f"(default {CSV_CHUNK_ROWS:,})",
    )


def request_from_args(args: argparse.Namespace) -> IngestRequest:
    """The request the parsed options describe."""
    return IngestRequest(
        source=args.source,
        symbols=args.symbols,
        symbol=args.symbol,
        start=args.start,
        end=args.end,
        interval=args.interval,
        seed=args.seed,
        correlation=args.correlation,
        chunk_rows=args.chunk_rows,
    )


def _utc_time(text: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date or time: {text!r}") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.ingest ...``."""
    return run_job(
        "ray_apps.jobs.ingest",
        __doc__,
        add_arguments,
        lambda args, settings: ingest(request_from_args(args), settings).render(),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
