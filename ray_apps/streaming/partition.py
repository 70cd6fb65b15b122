"""One partition's stream state, and what a micro-batch of its messages turns into.

A topic is keyed by symbol, so each symbol lives on one partition and the partition's state is
everything needed to continue it: one incremental feature engine per bar interval, the tick
aggregator's open bars (``ticks`` topic) and the highest offset already dead-lettered. The
state saves to bytes with the offset it reflects (``stores.checkpoints``), so whoever owns the
partition next restores it and continues where the last checkpoint stopped: nothing is lost,
nothing is applied twice (replayed messages after the checkpoint give the same writes, which
the stores apply idempotently), and no history is recomputed.

Processing is pure (no I/O): decoded messages in, the bars and features to store, the dead
letters and counts out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_apps.features.bar_checks import compiled_verdicts, float_column, reason_names
from ray_apps.features.engines.incremental import IncrementalEngine
from ray_apps.features.spec import FeatureSpec
from ray_apps.marketdata.schema import BAR_SCHEMA, parse_interval
from ray_apps.streaming.messages import DeadLetter, DecodedBatch, MessageKind, RawMessage
from ray_apps.streaming.ticks import BarAggregator

#: ``IncrementalEngine.last_times`` of a symbol without bars.
_NONE = np.iinfo(np.int64).min


@dataclass
class BatchResult:
    """What one micro-batch of a partition produced.

    Attributes:
        bars: the bars applied (``BAR_SCHEMA``), for the offline store.
        features: per bar interval, the features of those bars (``symbol, ts`` + columns).
        dead: messages refused, with their reasons.
        skipped: bars not newer than their symbol's last bar, within the late tolerance
            (replays and duplicates).
        next_offset: the offset after the batch's last message.
    """

    bars: pa.Table
    features: dict[str, pa.Table]
    dead: list[DeadLetter]
    skipped: int
    next_offset: int


@dataclass
class PartitionState:
    """The state of one partition of an input topic.

    Args:
        spec: the feature spec the engines compute.
        kind: what the topic carries.
        interval: the bar interval ticks are aggregated to (``ticks`` only).
        late_tolerance_us: how far behind its symbol's last bar a message may be and still
            count as a replay rather than a dead letter.
    """

    spec: FeatureSpec
    kind: MessageKind
    interval: str
    late_tolerance_us: int = 0
    engines: dict[str, IncrementalEngine] = field(default_factory=dict)
    aggregator: BarAggregator | None = None
    dead_through: int = -1

    def __post_init__(self) -> None:
        if self.kind == "ticks" and self.aggregator is None:
            self.aggregator = BarAggregator(self.interval)

    def process(self, batch: DecodedBatch, messages: dict[int, RawMessage]) -> BatchResult:
        """Advance the state by one decoded micro-batch of this partition.

        Args:
            batch: the decoded messages (``offset`` column) and those refused by the schema.
            messages: the raw messages by offset (dead letters carry their payload).
        """
        dead = list(batch.dead)
        if self.kind == "ticks":
            bars, skipped = self._ticks_to_bars(batch.table, messages, dead)
        else:
            bars, skipped = batch.table, 0
        applied, features, more_skipped = self._apply_bars(bars, messages, dead)
        offsets = [m.offset for m in messages.values()]
        return BatchResult(
            bars=applied,
            features=features,
            dead=sorted(dead, key=lambda d: d.offset),
            skipped=skipped + more_skipped,
            next_offset=max(offsets) + 1,
        )

    def _ticks_to_bars(
        self, ticks: pa.Table, messages: dict[int, RawMessage], dead: list[DeadLetter]
    ) -> tuple[pa.Table, int]:
        """Bars closed by these ticks; late ticks become dead letters, replays are skipped.

        A tick is behind when its bar is already closed (before the end of the symbol's last
        applied bar) or before the symbol's open bar.
        """
        assert self.aggregator is not None
        if ticks.num_rows == 0:
            return _empty_bars(), 0
        symbols = ticks.column("symbol").to_pylist()
        ts = _micros(ticks.column("ts"))
        length = int(parse_interval(self.interval).total_seconds() * 1_000_000)
        last = self._engine(self.interval).last_times(symbols)
        closed_until = np.where(last == _NONE, last, last + length)
        closed_until = np.maximum(closed_until, self.aggregator.open_starts(symbols))
        behind = ts < closed_until
        late = self._late(ts, closed_until)
        offsets = ticks.column("offset").to_numpy()
        for i in np.flatnonzero(late):
            detail = _late_detail(ts[i], closed_until[i])
            dead.append(_dead(messages[int(offsets[i])], "late", detail))
        kept = ticks.filter(pa.array(~behind)) if behind.any() else ticks
        bars = self.aggregator.add(kept)
        # Behind an earlier tick of the same batch by a whole interval: late too.
        for offset in self.aggregator.late.column("offset").to_pylist():
            dead.append(_dead(messages[int(offset)], "late", "behind an earlier tick's bar"))
        return bars, int((behind & ~late).sum())

    def _apply_bars(
        self, bars: pa.Table, messages: dict[int, RawMessage], dead: list[DeadLetter]
    ) -> tuple[pa.Table, dict[str, pa.Table], int]:
        """Check bars by the ingest rules and advance the engines with the good ones."""
        if bars.num_rows == 0:
            return _empty_bars(), {}, 0
        has_offsets = "offset" in bars.column_names
        prices = {c: _floats(bars, c) for c in ("open", "high", "low", "close", "volume")}
        codes = np.zeros(bars.num_rows, dtype=np.int8)
        compiled_verdicts(
            prices["high"], prices["low"], prices["close"], prices["volume"], prices["open"], codes
        )
        good = codes == 0
        if has_offsets and not good.all():
            offsets = bars.column("offset").to_numpy()
            names = reason_names(codes)
            for i in np.flatnonzero(~good):
                dead.append(_dead(messages[int(offsets[i])], str(names[i]), "breaks a bar rule"))
        applied_parts: list[pa.Table] = []
        features: dict[str, pa.Table] = {}
        skipped = 0
        intervals = bars.column("interval")
        for interval in pc.unique(intervals).to_pylist():
            rows = good & pc.equal(intervals, interval).to_numpy(zero_copy_only=False)
            if not rows.any():
                continue
            part = bars if rows.all() else bars.filter(pa.array(rows))
            engine = self._engine(str(interval))
            symbols = part.column("symbol").to_pylist()
            ts = _micros(part.column("ts"))
            last = engine.last_times(symbols)
            late = self._late(ts, last)
            if has_offsets and late.any():
                offsets = part.column("offset").to_numpy()
                for i in np.flatnonzero(late):
                    dead.append(
                        _dead(messages[int(offsets[i])], "late", _late_detail(ts[i], last[i]))
                    )
            chosen = np.flatnonzero(rows)  # the part's rows in ``bars`` (and ``prices``)
            if late.any():
                part = part.filter(pa.array(~late))
                symbols = [s for s, bad in zip(symbols, late, strict=True) if not bad]
                ts = ts[~late]
                chosen = chosen[~late]
            every = chosen.shape[0] == bars.num_rows
            taken = {c: v if every else v[chosen] for c, v in prices.items()}
            accepted, values = engine.update_arrays(
                symbols,
                ts,
                *(taken[c] for c in ("high", "low", "close", "volume")),
                open_=taken["open"],
            )
            skipped += int((~accepted).sum())
            part = part.filter(pa.array(accepted)) if not accepted.all() else part
            applied_parts.append(part.select(list(BAR_SCHEMA.names)).cast(BAR_SCHEMA))
            features[str(interval)] = engine.feature_table(
                part.column("symbol"), part.column("ts"), values
            )
        applied = pa.concat_tables(applied_parts) if applied_parts else _empty_bars()
        return applied, features, skipped

    def _late(self, ts: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Messages behind ``last`` (a symbol's last bar) by more than the tolerance."""
        known = last != _NONE
        late = np.zeros(ts.shape[0], dtype=bool)
        late[known] = ts[known] < last[known] - self.late_tolerance_us
        return late

    def _engine(self, interval: str) -> IncrementalEngine:
        engine = self.engines.get(interval)
        if engine is None:
            engine = self.engines[interval] = IncrementalEngine(self.spec)
        return engine

    def save(self) -> bytes:
        """The whole state as bytes (JSON; engine states as base64 of their own bytes)."""
        payload = {
            "kind": self.kind,
            "interval": self.interval,
            "dead_through": self.dead_through,
            "engines": {k: _b64(e.save()) for k, e in self.engines.items()},
            "aggregator": _b64(self.aggregator.save()) if self.aggregator else None,
        }
        return json.dumps(payload).encode()

    @classmethod
    def restore(cls, data: bytes, spec: FeatureSpec, late_tolerance_us: int = 0) -> PartitionState:
        """The state a :meth:`save` wrote, continuing where it stopped.

        Raises:
            UserError: the engines were saved under another feature spec.
        """
        payload = json.loads(data)
        interval = payload["interval"]
        aggregator = (
            BarAggregator.restore(base64.b64decode(payload["aggregator"]), interval)
            if payload["aggregator"]
            else None
        )
        return cls(
            spec=spec,
            kind=payload["kind"],
            interval=interval,
            late_tolerance_us=late_tolerance_us,
            engines={
                k: IncrementalEngine.restore(base64.b64decode(v), spec)
                for k, v in payload["engines"].items()
            },
            aggregator=aggregator,
            dead_through=int(payload["dead_through"]),
        )


def _dead(message: RawMessage, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
    )


def _late_detail(ts: int, last: int) -> str:
    behind = (int(last) - int(ts)) / 1_000_000
    return f"ts is {behind:g} s behind the symbol's last bar"


def _micros(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(ts, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A column as contiguous, writable float64 (one compiled type for the engines' calls)."""
    return np.require(float_column(table, column), requirements=["C", "W"])


def _empty_bars() -> pa.Table:
    return BAR_SCHEMA.empty_table()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
