"""The ingest pipeline: read or generate bars, validate them, store them.

Packaged data sets and files are read and validated in the calling process, chunk by chunk;
synthetic bars are generated and validated in parallel Ray tasks. Accepted rows go to the
``bars`` table and rejected rows to ``bars_quarantine`` through the offline-store actor, while
the next blocks are being prepared (``StoreWriter``).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
from pydantic import BaseModel, ConfigDict, PositiveInt

from ray_apps._private.ray_cluster import require_task_cpus
from ray_apps.errors import UserError
from ray_apps.marketdata.duplicates import SeenKeys
from ray_apps.marketdata.loaders import CSV_CHUNK_ROWS
from ray_apps.marketdata.schema import parse_interval
from ray_apps.marketdata.sources import SyntheticSource, TableSource, parse_source
from ray_apps.marketdata.store_writer import StoreWriter
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import ValidationResult, validate_bars

#: Rows each synthetic generation task produces (at most). Each block becomes one part of the
#: ``bars`` table: 1M-row parts leave the engine half the merging of 500k-row ones (measured on
#: 10M rows: 1.3-1.5x the end-to-end rate; 2M-row tasks fill the pipeline too slowly).
TASK_ROWS = 1_000_000
#: Synthetic tasks running or finished but not yet handed to the store, at most.
TASKS_AHEAD = 3

Echo = Callable[[str], None]
#: What one block adds to the summary: accepted rows, quarantined rows per reason, rows left
#: out by the symbol or time filters.
BlockCounts = tuple[int, dict[str, int], int]


class IngestRequest(BaseModel):
    """What to ingest and which part of it to keep."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    source: str
    symbols: list[str] | None = None
    symbol: str | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    interval: str | None = None
    seed: int = 7
    correlation: float = 0.3
    chunk_rows: PositiveInt = CSV_CHUNK_ROWS


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

    def add(self, counts: BlockCounts) -> None:
        """Count one stored block."""
        accepted, quarantined, outside = counts
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

    def nothing_accepted(self) -> str:
        """The one-line reason an ingest that accepted no row fails."""
        if not self.rows:
            return f"{self.source}: no rows to ingest"
        parts = []
        if self.quarantined:
            reasons = ", ".join(
                f"{reason} {count:,}"
                for reason, count in sorted(self.quarantined.items(), key=lambda kv: -kv[1])
            )
            parts.append(
                f"{sum(self.quarantined.values()):,} quarantined ({reasons}; see "
                f"`ray-apps data quarantine --ingest {self.ingest_id}`)"
            )
        if self.outside_range:
            parts.append(f"{self.outside_range:,} filtered out by --symbols/--start/--end")
        return f"{self.source}: no row accepted of {self.rows:,}: " + ", ".join(parts)


@dataclass(frozen=True)
class IngestContext:
    """What every step of one ingest shares."""

    request: IngestRequest
    summary: IngestSummary
    writer: StoreWriter
    echo: Echo
    started: float

    def rate(self, rows: int) -> str:
        """Rows per second since the start, for progress lines."""
        return f"{rows / max(time.monotonic() - self.started, 1e-9):,.0f} rows/s"


def run_ingest(
    request: IngestRequest, open_store: Callable[[], ray.actor.ActorHandle], echo: Echo = print
) -> IngestSummary:
    """Load, validate and store one source; nothing accepted is dropped.

    Args:
        request: what to ingest.
        open_store: returns the offline-store actor (``insert_bars``, ``insert_quarantine``);
            called once the request is known to be valid, so a bad one never reaches Ray.
        echo: where progress lines go.

    Raises:
        UserError: the request is invalid, the source unreadable, no row was accepted, or the
            store kept failing (the message says how many rows were stored).
    """
    if request.interval is not None:
        parse_interval(request.interval)
    source = parse_source(
        request.source, request.seed, request.correlation, request.symbol, request.chunk_rows
    )
    summary = IngestSummary(ingest_id=uuid.uuid4().hex[:12], source=source.name)
    store = open_store()
    if isinstance(source, SyntheticSource):  # its blocks are made in tasks of one CPU each
        require_task_cpus(1, "ingest of a synthetic source")
    writer = StoreWriter(
        store, summary.ingest_id, source.name, summary.add, lambda: summary.accepted
    )
    context = IngestContext(request, summary, writer, echo, time.monotonic())
    # merges wait until the load's parts are in (1.3x on 2 cores); reads use FINAL meanwhile
    store.pause_merges.remote(summary.ingest_id)
    try:
        if isinstance(source, SyntheticSource):
            _ingest_synthetic(source.spec, context)
        else:
            _ingest_table(source, context)
        writer.finish()
    finally:
        _resume_merges(store, summary.ingest_id)
    summary.seconds = time.monotonic() - context.started
    if summary.accepted == 0:
        raise UserError(summary.nothing_accepted())
    return summary


def _resume_merges(store: ray.actor.ActorHandle, ingest_id: str) -> None:
    """Ends the ingest's hold on merges; a store that went away has none left to end."""
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get(store.resume_merges.remote(ingest_id))


def validated_chunks(
    source: TableSource, request: IngestRequest
) -> Iterator[tuple[ValidationResult, int]]:
    """Each chunk of a table source validated, with the rows the symbol filter left out.

    Row numbers in the quarantine count the source's rows (0 = first data row), and a
    ``(symbol, interval, ts)`` repeated in a later chunk is a duplicate like one in the same
    chunk.
    """
    seen = SeenKeys()
    offset = 0
    for raw in source.read():
        numbers = np.arange(offset, offset + len(raw), dtype=np.int64)
        offset += len(raw)
        outside = 0
        if request.symbols and "symbol" in raw.columns:
            wanted = raw["symbol"].astype("string").str.strip().isin(request.symbols)
            wanted = wanted.fillna(False).to_numpy(dtype=bool)
            outside = int((~wanted).sum())
            raw, numbers = raw.loc[wanted], numbers[wanted]
        yield validate_bars(raw, request.interval, row_numbers=numbers, seen=seen), outside


def _ingest_table(source: TableSource, context: IngestContext) -> None:
    """Validate chunks in this process and hand each to the store."""
    read = 0
    for result, outside in validated_chunks(source, context.request):
        bars, left_out = _in_range(result.bars, context.request)
        counts = (bars.num_rows, result.reason_counts(), outside + left_out)
        context.writer.submit(bars, result.quarantined, counts)
        read += result.bars.num_rows + len(result.quarantined) + outside
        context.echo(
            f"  {read:,} rows read, {context.summary.accepted:,} stored ({context.rate(read)})"
        )


def _ingest_synthetic(spec: SyntheticSpec, context: IngestContext) -> None:
    """Generate and validate blocks of symbols in parallel tasks, storing finished ones."""
    wanted = context.request.symbols
    indices = [i for i in range(spec.n_symbols) if not wanted or spec.symbol(i) in wanted]
    per_task = max(1, TASK_ROWS // spec.n_bars)
    blocks = deque(indices[i : i + per_task] for i in range(0, len(indices), per_task))
    total = len(blocks)
    every = max(1, math.ceil(total / 10))
    running: dict[ray.ObjectRef, list[ray.ObjectRef]] = {}
    handed = 0
    while blocks or running:
        while blocks and len(running) < TASKS_AHEAD:
            refs = _synthetic_block.remote(spec, blocks.popleft(), context.request)
            running[refs[2]] = refs
        ready, _ = ray.wait(list(running), num_returns=1)
        bars, quarantined, counts = running.pop(ready[0])
        context.writer.submit(bars, quarantined, ray.get(counts))
        handed += 1
        if handed % every == 0 or handed == total:
            context.echo(
                f"  {handed}/{total} blocks generated, {context.summary.accepted:,} rows stored "
                f"({context.rate(context.summary.accepted)})"
            )


@ray.remote(num_cpus=1, num_returns=3)
def _synthetic_block(
    spec: SyntheticSpec, indices: Sequence[int], request: IngestRequest
) -> tuple[pa.Table, pd.DataFrame, BlockCounts]:
    """Generate and validate one block of synthetic symbols."""
    contiguous = list(indices) == list(range(indices[0], indices[-1] + 1))
    if contiguous:
        raw = generate_bars(spec, indices[0], len(indices), text_as_category=True)
    else:
        raw = pd.concat([generate_bars(spec, i, 1) for i in indices], ignore_index=True)
    result = validate_bars(raw, spec.interval, indices[0] * spec.n_bars)
    bars, outside = _in_range(result.bars, request)
    return bars, result.quarantined, (bars.num_rows, result.reason_counts(), outside)


def _in_range(bars: pa.Table, request: IngestRequest) -> tuple[pa.Table, int]:
    """Accepted rows within ``[start, end)`` and how many fell outside."""
    if request.start is None and request.end is None:
        return bars, 0
    keep = pa.array(np.ones(bars.num_rows, dtype=bool))
    ts_type = bars.schema.field("ts").type
    if request.start is not None:
        keep = pc.and_(keep, pc.greater_equal(bars["ts"], pa.scalar(request.start, ts_type)))
    if request.end is not None:
        keep = pc.and_(keep, pc.less(bars["ts"], pa.scalar(request.end, ts_type)))
    kept = bars.filter(keep)
    return kept, bars.num_rows - kept.num_rows
