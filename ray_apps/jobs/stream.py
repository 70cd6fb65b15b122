"""Streaming jobs: ``python -m ray_apps.jobs.stream replay|start|stop|status ...``.

Runs the same as ``ray-apps stream ...``: ``replay`` reads a source and publishes its bars (or
ticks made from them) to Kafka in time order, keyed by symbol; ``start`` starts the consumer
actors (detached: they outlive the job), ``stop`` stops them, ``status`` prints their figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import pyarrow as pa
import ray
from pydantic import ValidationError

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.errors import UserError, validation_problems
from ray_apps.jobs import positive_int, run_job
from ray_apps.marketdata.schema import bars_table
from ray_apps.marketdata.sources import SOURCE_FORMS, SyntheticSource, parse_source
from ray_apps.marketdata.synthetic import generate_bars
from ray_apps.stores.offline_actor import offline_store
from ray_apps.streaming.control import start_consumers, stop_consumers, stream_status
from ray_apps.streaming.replay import Echo, ReplayRequest, ReplaySummary, canonical_bars, run_replay

STORE_SOURCE = "store"


def replay(request: ReplayRequest, settings: Settings, echo: Echo = print) -> ReplaySummary:
    """Replay a source's bars onto the configured broker."""
    skipped = [0]

    def blocks() -> Iterator[pa.Table]:
        if request.source == STORE_SOURCE:
            connect_ray(settings)
            yield ray.get(offline_store(settings).bars.remote(symbols=request.symbols))
            return
        source = parse_source(request.source, symbol=request.symbol)
        if isinstance(source, SyntheticSource):
            yield bars_table(generate_bars(source.spec))
            return
        for frame in source.read():
            table, dropped = canonical_bars(frame)
            skipped[0] += dropped
            yield table

    bars = list(blocks())
    return run_replay(bars, request, settings, echo, skipped=skipped[0])


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay options, shared by ``ray-apps stream replay`` and this job."""
    parser.add_argument("--source", required=True, help=f"one of: {SOURCE_FORMS}, or store")
    parser.add_argument("--rate", type=float, metavar="N", help="messages per second")
    parser.add_argument(
        "--speedup", type=float, metavar="X", help="event time X times faster than real time"
    )
    parser.add_argument("--topic", choices=("bars", "ticks"), default="bars")
    parser.add_argument(
        "--encoding",
        choices=("binary", "json"),
        default="binary",
        help="message encoding: binary (compact, fastest to consume) or json (readable); "
        "consumers read both",
    )
    parser.add_argument(
        "--ticks-per-bar",
        type=int,
        default=4,
        metavar="N",
        help="trades made from each bar with --topic ticks (at least 4)",
    )
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="only these symbols")
    parser.add_argument(
        "--symbol",
        help="the symbol of every row of a CSV/Parquet file without a symbol column "
        "(e.g. a Date,Open,High,Low,Close,Adj Close,Volume price download)",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="at most N bars, earliest first")


def replay_request(args: argparse.Namespace) -> ReplayRequest:
    """The request the parsed options describe.

    Raises:
        UserError: an option is out of range (one line naming it).
    """
    try:
        return ReplayRequest(
            source=args.source,
            rate=args.rate,
            speedup=args.speedup,
            topic=args.topic,
            encoding=args.encoding,
            ticks_per_bar=args.ticks_per_bar,
            symbols=args.symbols,
            symbol=args.symbol,
            limit=args.limit,
        )
    except ValidationError as exc:
        problem = validation_problems(exc, limit=1, root="rate/speedup").replace("_", "-")
        raise UserError(f"stream replay: --{problem.replace('Value error, ', '')}") from exc


def add_consumer_arguments(actions: argparse._SubParsersAction) -> None:
    """The ``start``, ``stop`` and ``status`` sub-commands, shared with ``ray-apps stream``."""
    start = actions.add_parser(
        "start",
        help="start the stream consumers (detached Ray actors in one consumer group)",
        description="Start N consumers of the ticks and bars topics; they keep Redis and the "
        "offline store fresh until `ray-apps stream stop`. Running consumers are left running.",
    )
    start.add_argument(
        "--consumers", type=positive_int, default=1, metavar="N", help="consumer actors"
    )
    actions.add_parser(
        "stop",
        help="store what the consumers hold, checkpoint, commit, and stop them",
        description="Each consumer writes what it holds to the offline store, checkpoints its "
        "partitions, commits its offsets and leaves the group; then its actor is removed.",
    )
    status = actions.add_parser("status", help="each consumer's figures")
    status.add_argument("--json", action="store_true", help="print one JSON list")


def run_action(args: argparse.Namespace, settings: Settings) -> str:
    """Run one ``stream`` action and return what to print."""
    if args.action == "replay":
        return replay(replay_request(args), settings).render()
    connect_ray(settings)
    if args.action == "start":
        return start_consumers(settings, args.consumers).render()
    if args.action == "stop":
        return stop_consumers(settings).render()
    status = stream_status(settings)
    if args.json:
        return json.dumps([c.model_dump() for c in status.consumers])
    return status.render()


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_replay_arguments(actions.add_parser("replay", help="publish a source to Kafka"))
    add_consumer_arguments(actions)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.stream ACTION ...``."""
    return run_job("ray_apps.jobs.stream", __doc__, _add_arguments, run_action, argv)


if __name__ == "__main__":
    sys.exit(main())
