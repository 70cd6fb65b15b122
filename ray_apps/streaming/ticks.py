"""Ticks (trades): synthesized from bars for replay, and aggregated back into bars.

A tick table has the columns ``symbol, ts, price, size`` (``ts`` as ``timestamp[us, UTC]``);
more columns (a Kafka offset...) may ride along and come back in :attr:`BarAggregator.late`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ray_apps.errors import UserError
from ray_apps.marketdata.schema import BAR_SCHEMA, parse_interval

TICK_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("size", pa.float64()),
    ]
)
_STATE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("bucket", pa.int64()),
        *((name, pa.float64()) for name in ("open", "high", "low", "close", "volume")),
    ]
)
_US = 1_000_000


def synthesize_ticks(bars: pa.Table, ticks_per_bar: int = 4, seed: int = 0) -> pa.Table:
    """Trades inside each bar that aggregate back to it exactly (but for rounding of sizes).

    Each bar of ``BAR_COLUMNS`` becomes ``ticks_per_bar`` trades at evenly spaced times in
    ``[ts, ts + interval)``: the first at the open price, the last at the close, one at the
    high and one at the low (random places in between), the others uniform between low and
    high; sizes are positive random shares of the volume. A bar with volume 0 (or not a
    positive finite volume) has no trades, so it gives no ticks at all.

    Args:
        bars: bars with an ``interval`` column.
        ticks_per_bar: trades per bar, at least 4 (open, high, low, close).
        seed: same seed, same ticks.

    Returns:
        ``TICK_SCHEMA`` rows sorted by ``ts`` then ``symbol``.
    """
    if ticks_per_bar < 4:
        raise UserError(f"ticks_per_bar: {ticks_per_bar} is below 4 (open, high, low, close)")
    volume = bars.column("volume").to_numpy(zero_copy_only=False).astype(np.float64)
    bars = bars.filter(pa.array(np.isfinite(volume) & (volume > 0)))
    n, k = bars.num_rows, ticks_per_bar
    if n == 0:
        return TICK_SCHEMA.empty_table()
    rng = np.random.default_rng(seed)
    start = bars.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    intervals = pc.cast(bars.column("interval"), pa.string())
    length = np.empty(n, dtype=np.int64)
    for text in pc.unique(intervals).to_pylist():
        mask = pc.equal(intervals, text).to_numpy(zero_copy_only=False)
        length[mask] = int(parse_interval(text).total_seconds() * _US)
    times = start[:, None] + length[:, None] * np.arange(k)[None, :] // k
    o, h, lo, c, v = (
        bars.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        for name in ("open", "high", "low", "close", "volume")
    )
    prices = lo[:, None] + rng.random((n, k)) * (h - lo)[:, None]
    places = np.argsort(rng.random((n, k - 2)), axis=1)[:, :2] + 1  # two distinct inner ticks
    rows = np.arange(n)
    prices[rows, places[:, 0]] = h
    prices[rows, places[:, 1]] = lo
    prices[:, 0], prices[:, -1] = o, c
    shares = rng.uniform(0.5, 1.5, (n, k))
    sizes = v[:, None] * shares / shares.sum(axis=1, keepdims=True)
    ticks = pa.table(
        {
            "symbol": pa.array(
                np.repeat(
                    pc.cast(bars.column("symbol"), pa.string()).to_numpy(zero_copy_only=False), k
                ),
                pa.string(),
            ),
            "ts": pa.array(times.ravel(), pa.timestamp("us", tz="UTC")),
            "price": prices.ravel(),
            "size": sizes.ravel(),
        },
        schema=TICK_SCHEMA,
    )
    return ticks.sort_by([("ts", "ascending"), ("symbol", "ascending")])


class BarAggregator:
    """Bars of one interval from a stream of ticks, symbol by symbol, batch by batch.

    Each symbol has at most one open bar. A tick of a later interval than the open bar closes
    it (``add`` returns it) and opens the next; ``flush`` closes them all. A tick of an
    earlier interval than its symbol's open bar (or than an earlier tick of the same batch)
    is not applied: :attr:`late` holds those rows of the last ``add``'s input, all columns
    kept, in input order, and :attr:`late_count` counts them since the start.
    """

    def __init__(self, interval: str) -> None:
        self.interval = interval
        self._length = int(parse_interval(interval).total_seconds() * _US)
        self._open: dict[str, tuple[int, float, float, float, float, float]] = {}
        self.late: pa.Table = TICK_SCHEMA.empty_table()
        self.late_count = 0

    def add(self, ticks: pa.Table) -> pa.Table:
        """Apply ticks (``TICK_SCHEMA`` columns, arrival order) and return the bars they closed."""
        symbols = pc.cast(ticks.column("symbol"), pa.string()).combine_chunks()
        codes_array = pc.index_in(symbols, pc.unique(symbols))
        names = pc.unique(symbols).to_pylist()
        codes = codes_array.to_numpy(zero_copy_only=False).astype(np.int64)
        micros = ticks.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        buckets = np.floor_divide(micros.to_numpy(), self._length)
        price = ticks.column("price").to_numpy(zero_copy_only=False).astype(np.float64)
        size = ticks.column("size").to_numpy(zero_copy_only=False).astype(np.float64)
        # the open bars of these symbols go first, as one partial bar each
        held = [
            (code, self._open.pop(name)) for code, name in enumerate(names) if name in self._open
        ]
        state = np.array([[code, *bar] for code, bar in held], dtype=np.float64).reshape(-1, 7)
        code = np.concatenate([state[:, 0].astype(np.int64), codes])
        bucket = np.concatenate([state[:, 1].astype(np.int64), buckets])
        o, h, lo, c, v = (
            np.concatenate([state[:, 2 + i], x])
            for i, x in enumerate((price, price, price, price, size))
        )
        arrival = np.arange(len(code)) - len(state)  # state rows first
        order = np.lexsort((arrival, code))
        code, bucket, o, h, lo, c, v, arrival = (
            x[order] for x in (code, bucket, o, h, lo, c, v, arrival)
        )
        behind = _running_max_by_group(code, bucket) > bucket
        late_rows = np.sort(arrival[behind])
        self.late = ticks.take(pa.array(late_rows, pa.int64()))
        self.late_count += len(late_rows)
        keep = ~behind
        code, bucket, o, h, lo, c, v = (x[keep] for x in (code, bucket, o, h, lo, c, v))
        if len(code) == 0:
            return BAR_SCHEMA.empty_table()
        starts = np.flatnonzero(np.r_[True, (np.diff(code) != 0) | (np.diff(bucket) != 0)])
        ends = np.r_[starts[1:], len(code)] - 1
        bars = (
            code[starts],
            bucket[starts],
            o[starts],
            np.maximum.reduceat(h, starts),
            np.minimum.reduceat(lo, starts),
            c[ends],
            np.add.reduceat(v, starts),
        )
        last_of_symbol = np.r_[bars[0][1:] != bars[0][:-1], True]
        for row in np.flatnonzero(last_of_symbol).tolist():
            self._open[names[int(bars[0][row])]] = (
                int(bars[1][row]),
                *(float(x[row]) for x in bars[2:]),
            )
        closed = ~last_of_symbol
        return self._bars(
            [names[i] for i in bars[0][closed].tolist()], *(x[closed] for x in bars[1:])
        )

    def open_starts(self, symbols: Sequence[str]) -> np.ndarray:
        """Each symbol's open bar start (int64 microseconds; the int64 minimum if none)."""
        none = np.iinfo(np.int64).min
        return np.array(
            [self._open[s][0] * self._length if s in self._open else none for s in symbols],
            dtype=np.int64,
        )

    def flush(self) -> pa.Table:
        """Close every open bar and return them."""
        held = sorted(self._open.items())
        self._open = {}
        if not held:
            return BAR_SCHEMA.empty_table()
        values = np.array([bar for _, bar in held], dtype=np.float64)
        return self._bars(
            [s for s, _ in held],
            values[:, 0].astype(np.int64),
            *(values[:, i] for i in range(1, 6)),
        )

    def save(self) -> bytes:
        """The open bars, as bytes for :meth:`restore`."""
        held = sorted(self._open.items())
        table = pa.table(
            [
                pa.array([s for s, _ in held], pa.string()),
                *(pa.array([bar[i] for _, bar in held]) for i in range(6)),
            ],
            schema=_STATE_SCHEMA,
        )
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    @classmethod
    def restore(cls, data: bytes, interval: str) -> BarAggregator:
        """An aggregator with the open bars :meth:`save` wrote."""
        aggregator = cls(interval)
        table = ipc.open_stream(data).read_all()
        for row in table.to_pylist():
            aggregator._open[row["symbol"]] = (
                row["bucket"],
                row["open"],
                row["high"],
                row["low"],
                row["close"],
                row["volume"],
            )
        return aggregator

    def _bars(self, symbols: list[str], bucket: np.ndarray, *ohlcv: np.ndarray) -> pa.Table:
        table = pa.table(
            [
                pa.array(symbols, pa.string()),
                pa.array([self.interval] * len(symbols), pa.string()),
                pa.array(bucket * self._length, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                *(pa.array(x, pa.float64()) for x in ohlcv),
            ],
            schema=BAR_SCHEMA,
        )
        return table.sort_by([("ts", "ascending"), ("symbol", "ascending")])


def _running_max_by_group(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The running maximum of ``value`` within each run of equal ``group`` (sorted groups)."""
    if len(value) == 0:
        return value
    low = value.min()
    span = int(value.max() - low) + 1
    key = group * span + (value - low)
    return np.maximum.accumulate(key) - group * span + low
