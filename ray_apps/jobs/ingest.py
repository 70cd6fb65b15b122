"""Ingest bars into the offline store: ``python -m ray_apps.jobs.ingest --source SOURCE ...``.

Runs the same as ``ray-apps ingest`` and as ``ray job submit -- python -m ray_apps.jobs.ingest``.
Packaged data sets and files are validated in the driver; synthetic bars are generated and
validated in parallel Ray tasks. Accepted rows go to the ``bars`` table and rejected rows to
``bars_quarantine``, both through the offline-store actor.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Callable, Sequence

import pandas as pd
import ray
from pydantic import BaseModel

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.jobs import run_job
from ray_apps.marketdata.schema import parse_interval
from ray_apps.marketdata.sources import (
    SOURCE_FORMS,
    SyntheticSource,
    TableSource,
    parse_source,
)
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import ValidationResult, validate_bars
from ray_apps.stores.offline_actor import offline_store

#: Rows each synthetic generation task produces (at most).
TASK_ROWS = 500_000

Echo = Callable[[str], None]


class IngestRequest(BaseModel):
    """What to ingest and which part of it to keep."""

    source: str
    symbols: list[str] | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    interval: str | None = None
    seed: int = 7
    correlation: float = 0.3

    model_config = {"arbitrary_types_allowed": True}


class IngestSummary(BaseModel):
    """What an ingest accepted, quarantined (per reason) and left out of the time range."""

    ingest_id: str
    source: str
    accepted: int = 0
    quarantined: dict[str, int] = {}
    outside_range: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Rows read from the source."""
        return self.accepted + sum(self.quarantined.values()) + self.outside_range

    @property
    def rows_per_s(self) -> float:
        """Rows read per second of wall time."""
        return self.rows / self.seconds if self.seconds else 0.0

    def add(self, accepted: int, quarantined: dict[str, int], outside: int) -> None:
        """Count one validated block."""
        self.accepted += accepted
        self.outside_range += outside
        for reason, count in quarantined.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count

    def render(self) -> str:
        """The summary printed after an ingest."""
        lines = [
            f"ingest {self.ingest_id} of {self.source}: {self.rows:,} rows in {self.seconds:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s)",
            f"  accepted      {self.accepted:>12,}",
            f"  quarantined   {sum(self.quarantined.values()):>12,}",
        ]
        lines += [
            f"    {reason:<24}{count:>10,}" for reason, count in sorted(self.quarantined.items())
        ]
        if self.outside_range:
            lines.append(f"  filtered out  {self.outside_range:>12,} (by --symbols/--start/--end)")
        if self.quarantined:
            lines.append(f"  see them: ray-apps data quarantine --ingest {self.ingest_id}")
        return "\n".join(lines)


def run_ingest(request: IngestRequest, settings: Settings, echo: Echo = print) -> IngestSummary:
    """Load, validate and store one source; nothing accepted is dropped."""
    if request.interval is not None:
        parse_interval(request.interval)
    source = parse_source(request.source, request.seed, request.correlation)
    connect_ray(settings)
    store = offline_store(settings)
    summary = IngestSummary(ingest_id=uuid.uuid4().hex[:12], source=source.name)
    started = time.monotonic()
    if isinstance(source, SyntheticSource):
        _ingest_synthetic(source, request, store, summary, echo, started)
    else:
        _ingest_table(source, request, store, summary, echo, started)
    summary.seconds = time.monotonic() - started
    return summary


def _ingest_table(
    source: TableSource,
    request: IngestRequest,
    store: ray.actor.ActorHandle,
    summary: IngestSummary,
    echo: Echo,
    started: float,
) -> None:
    """Validate chunks in the driver and hand each to the store."""
    offset = 0
    for raw in source.read():
        first_row = offset
        offset += len(raw)
        if request.symbols and "symbol" in raw.columns:
            wanted = raw["symbol"].astype("string").str.strip().isin(request.symbols)
            summary.outside_range += int((~wanted).sum())
            raw = raw.loc[wanted.to_numpy()]
        result = validate_bars(raw, request.interval, first_row)
        summary.add(*_store_valid(result, request, store, summary.ingest_id, source.name))
        echo(
            f"  {offset:,} rows read, {summary.accepted:,} accepted "
            f"({offset / (time.monotonic() - started):,.0f} rows/s)"
        )


def _ingest_synthetic(
    source: SyntheticSource,
    request: IngestRequest,
    store: ray.actor.ActorHandle,
    summary: IngestSummary,
    echo: Echo,
    started: float,
) -> None:
    """Generate, validate and store blocks of symbols in parallel tasks."""
    spec = source.spec
    indices = [
        i for i in range(spec.n_symbols) if not request.symbols or spec.symbol(i) in request.symbols
    ]
    per_task = max(1, TASK_ROWS // spec.n_bars)
    blocks = [indices[i : i + per_task] for i in range(0, len(indices), per_task)]
    pending = [
        _synthetic_block.remote(spec, block, request, store, summary.ingest_id, source.name)
        for block in blocks
    ]
    done = 0
    every = max(1, math.ceil(len(blocks) / 10))
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        summary.add(*ray.get(ready[0]))
        done += 1
        if done % every == 0 or not pending:
            echo(
                f"  {done}/{len(blocks)} blocks, {summary.accepted:,} rows accepted "
                f"({summary.rows / (time.monotonic() - started):,.0f} rows/s)"
            )


@ray.remote(num_cpus=1)
def _synthetic_block(
    spec: SyntheticSpec,
    indices: Sequence[int],
    request: IngestRequest,
    store: ray.actor.ActorHandle,
    ingest_id: str,
    source: str,
) -> tuple[int, dict[str, int], int]:
    """Generate, validate and store one block of synthetic symbols."""
    contiguous = list(indices) == list(range(indices[0], indices[-1] + 1))
    if contiguous:
        raw = generate_bars(spec, indices[0], len(indices))
    else:
        raw = pd.concat([generate_bars(spec, i, 1) for i in indices], ignore_index=True)
    result = validate_bars(raw, spec.interval, indices[0] * spec.n_bars)
    return _store_valid(result, request, store, ingest_id, source)


def _store_valid(
    result: ValidationResult,
    request: IngestRequest,
    store: ray.actor.ActorHandle,
    ingest_id: str,
    source: str,
) -> tuple[int, dict[str, int], int]:
    """Store accepted rows within the time range and every quarantined row; return counts."""
    accepted, outside = _in_range(result, request)
    ray.get(
        [
            store.insert_bars.remote(accepted),
            store.insert_quarantine.remote(result.quarantined, ingest_id, source),
        ]
    )
    return len(accepted), result.reason_counts(), outside


def _in_range(result: ValidationResult, request: IngestRequest) -> tuple[pd.DataFrame, int]:
    """Accepted rows within ``[start, end)`` and how many fell outside."""
    bars = result.accepted
    keep = pd.Series(True, index=bars.index)
    if request.start is not None:
        keep &= bars["ts"] >= request.start
    if request.end is not None:
        keep &= bars["ts"] < request.end
    return bars.loc[keep], int((~keep).sum())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingest options, shared by ``ray-apps ingest`` and this job's entry point."""
    parser.add_argument("--source", required=True, help=f"one of: {SOURCE_FORMS}")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="keep only these symbols")
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


def request_from_args(args: argparse.Namespace) -> IngestRequest:
    """The request the parsed options describe."""
    return IngestRequest(
        source=args.source,
        symbols=args.symbols,
        start=args.start,
        end=args.end,
        interval=args.interval,
        seed=args.seed,
        correlation=args.correlation,
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
        lambda args, settings: run_ingest(request_from_args(args), settings).render(),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
