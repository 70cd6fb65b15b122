"""``ray-apps features compute | materialize | online | list``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ray_apps.cli._table import format_table
from ray_apps.config import load_settings
from ray_apps.features.spec import DEFAULT_SPEC_PATH, load_spec
from ray_apps.jobs.features import add_arguments, run_action
from ray_apps.stores.online import online_store


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``features`` sub-commands."""
    parser = commands.add_parser(
        "features",
        help="compute features, materialize them to Redis, read them back",
        description="One feature spec (data/features.yaml), three engines: ray (Ray Data), "
        "spark (Spark on Ray) and incremental (the stream engine), with identical numbers.",
    )
    add_arguments(parser)
    actions = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    online = actions.add_parser("online", help="the online feature vector of one symbol")
    online.add_argument("symbol")
    online.add_argument("--json", action="store_true", help="print one JSON object")
    online.set_defaults(handler=_online)
    listing = actions.add_parser("list", help="the spec's features and columns")
    listing.add_argument("--spec", type=Path, default=DEFAULT_SPEC_PATH)
    listing.set_defaults(handler=_list)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    print(run_action(args, load_settings()))
    return 0


def _online(args: argparse.Namespace) -> int:
    vector = online_store(load_settings()).read(args.symbol)
    if vector is None:
        print(f"no online features for {args.symbol}; run `ray-apps features materialize`")
        return 1
    if args.json:
        print(json.dumps({"symbol": args.symbol, **vector}))
        return 0
    head = [("symbol", args.symbol), ("as_of", vector.pop("as_of"))]
    head.append(("spec_version", vector.pop("spec_version")))
    rows = head + sorted((name, f"{value:.6g}") for name, value in vector.items())
    print(format_table(["field", "value"], rows))
    return 0


def _list(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    rows = [
        (
            entry.name,
            ", ".join(entry.columns),
            entry.definition.warmup(entry.params),
            entry.definition.summary,
        )
        for entry in spec.features
    ]
    print(f"spec {args.spec} version {spec.version}: {len(spec.columns)} columns")
    print(format_table(["feature", "columns", "warm-up", "definition"], rows))
    return 0
