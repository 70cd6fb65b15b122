"""``ray-apps stream replay|start|stop|status``."""

from __future__ import annotations

import argparse

from ray_apps.config import load_settings
from ray_apps.jobs.stream import (
    add_consumer_arguments,
    add_replay_arguments,
    replay,
    replay_request,
    run_action,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``stream`` command group."""
    stream = commands.add_parser(
        "stream", help="the streaming path: replay to Kafka, consumers to Redis and ClickHouse"
    )
    actions = stream.add_subparsers(dest="action", required=True, metavar="ACTION")
    _register_replay(actions)
    add_consumer_arguments(actions)
    for name in ("start", "stop", "status"):
        actions.choices[name].set_defaults(handler=_consumers)


def _register_replay(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "replay",
        help="publish a source's bars (or ticks made from them) to Kafka in time order",
        description="Publish bars of a source to the bars topic (or trades made from them to "
        "the ticks topic) in time order across symbols, keyed by symbol, with an idempotent "
        "producer; as fast as possible, at --rate messages/s, or at event time x --speedup.",
    )
    add_replay_arguments(parser)
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    print(replay(replay_request(args), load_settings()).render())
    return 0


def _consumers(args: argparse.Namespace) -> int:
    print(run_action(args, load_settings()))
    return 0
