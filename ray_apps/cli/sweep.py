"""``ray-apps sweep SPEC`` and ``ray-apps models list``."""

from __future__ import annotations

import argparse
import json
import math

from ray_apps.cli._table import format_table
from ray_apps.config import load_settings
from ray_apps.jobs.sweep import add_arguments, run_from_args

SHOWN_METRICS = ("test_ic", "test_rank_ic", "test_icir", "test_sharpe", "test_max_drawdown")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``models`` sub-commands."""
    sweep = commands.add_parser(
        "sweep",
        help="run a Ray Tune sweep from a spec and register the best model",
        description="Tune a model over walk-forward folds (ASHA, random or optuna search), log "
        "every trial to MLflow under one parent run, keep checkpoints on S3, then evaluate the "
        "best trial once on the held-out test period and register it with the spec's alias.",
    )
    add_arguments(sweep)
    sweep.set_defaults(handler=_sweep)
    models = commands.add_parser("models", help="registered models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="registered models: versions, aliases and test-period metrics"
    )
    listing.add_argument("--name", help="only this registered model")
    listing.add_argument("--json", action="store_true", help="one JSON object per version")
    listing.set_defaults(handler=_list)


def _sweep(args: argparse.Namespace) -> int:
    print(run_from_args(args, load_settings()))
    return 0


def _list(args: argparse.Namespace) -> int:
    # imported here: MLflow takes a second that `ray-apps --help` need not wait
    from mlflow.tracking import MlflowClient

    from ray_apps.training.registry import list_versions
    from ray_apps.training.tracking import ensure_reachable

    client = MlflowClient(load_settings().mlflow.uri)
    ensure_reachable(client)
    rows = list_versions(client, args.name)
    if args.json:
        for row in rows:
            print(
                json.dumps(
                    {
                        "name": row.name,
                        "version": row.version,
                        "aliases": row.aliases,
                        "created": row.created.isoformat(),
                        "metrics": row.metrics,
                        "tags": row.tags,
                    }
                )
            )
        return 0
    if not rows:
        print("no registered models; run `ray-apps sweep tune/<spec>.yaml`")
        return 0
    table = [
        (
            row.name,
            row.version,
            ",".join(f"@{a}" for a in row.aliases),
            f"{row.created:%Y-%m-%d %H:%M}",
            row.tags.get("data.horizon", ""),
            *(_number(row.metrics.get(k)) for k in SHOWN_METRICS),
        )
        for row in rows
    ]
    header = [
        "model",
        "version",
        "aliases",
        "created",
        "horizon",
        *(k.removeprefix("test_") for k in SHOWN_METRICS),
    ]
    print(format_table(header, table))
    return 0


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:+.4f}"
