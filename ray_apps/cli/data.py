"""``ray-apps data symbols | show | latest | quarantine``: read the offline store."""

from __future__ import annotations

import argparse

import pandas as pd
import pyarrow as pa
import ray

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
from ray_apps.jobs.ingest import _utc_time
from ray_apps.stores.offline_actor import OfflineStoreHandle, offline_store


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``data`` sub-commands."""
    parser = commands.add_parser("data", help="query the offline store")
    parser.add_argument("--json", action="store_true", help="print JSON records, one per line")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser(
        "symbols", help="symbols with their intervals, ranges and bar counts"
    ).set_defaults(handler=_symbols)
    show = sub.add_parser("show", help="bars of one symbol")
    show.add_argument("symbol")
    show.add_argument("--start", type=_utc_time, help="from this time (UTC), inclusive")
    show.add_argument("--end", type=_utc_time, help="to this time (UTC), exclusive")
    show.add_argument("--interval", help="only bars of this interval")
    show.add_argument("--limit", type=int, default=50, help="at most this many bars (default 50)")
    show.set_defaults(handler=_show)
    latest = sub.add_parser("latest", help="the latest bar of each symbol")
    latest.add_argument("symbols", nargs="*", metavar="SYMBOL")
    latest.set_defaults(handler=_latest)
    quarantine = sub.add_parser("quarantine", help="rows rejected by validation, with reasons")
    quarantine.add_argument("--ingest", help="only this ingest id")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.set_defaults(handler=_quarantine)


def _store() -> OfflineStoreHandle:
    settings = load_settings()
    connect_ray(settings)
    return offline_store(settings)


def _print(table: pa.Table, empty: str, as_json: bool) -> int:
    frame = table.to_pandas()
    if as_json:
        if not frame.empty:
            print(frame.to_json(orient="records", lines=True, date_format="iso", date_unit="us"))
        return 0
    if frame.empty:
        print(empty)
        return 1
    with pd.option_context(
        "display.max_rows", None, "display.width", 200, "display.max_colwidth", 120
    ):
        print(frame.to_string(index=False))
    return 0


def _symbols(args: argparse.Namespace) -> int:
    return _print(
        ray.get(_store().symbols.remote()), "no bars stored yet: run `ray-apps ingest`", args.json
    )


def _show(args: argparse.Namespace) -> int:
    bars = ray.get(
        _store().bars.remote([args.symbol], args.start, args.end, args.interval, args.limit)
    )
    return _print(
        bars, f"no bars for {args.symbol} in that range (see `ray-apps data symbols`)", args.json
    )


def _latest(args: argparse.Namespace) -> int:
    return _print(
        ray.get(_store().latest.remote(args.symbols or None)), "no bars stored yet", args.json
    )


def _quarantine(args: argparse.Namespace) -> int:
    rows = ray.get(_store().quarantine.remote(args.ingest, args.limit))
    return _print(rows, "no quarantined rows", args.json)
