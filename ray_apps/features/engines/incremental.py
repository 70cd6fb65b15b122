"""The incremental engine: per-symbol state updated bar by bar, for the stream consumer.

Each symbol owns one float64 state vector (:mod:`ray_apps.features.kernels`); a micro-batch of
bars for many symbols is one compiled call that advances each bar's symbol in O(1). Because
the batch engines run the very same per-bar kernels, the values equal theirs at every bar.
A bar that breaks the bar rules (:mod:`ray_apps.features.bar_checks`: a NaN, infinite or
non-positive price, a bad volume, an inconsistent high or low) is refused before it reaches
the kernels: its symbol's state is left as it was, and the refusal is counted by reason.
The whole engine (symbols, states, last timestamps, latest vectors, counts) saves to bytes and
restores, so a consumer can checkpoint anywhere in a series.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_apps.errors import UserError
from ray_apps.features import kernels
from ray_apps.features.bar_checks import add_counts, bar_verdicts, reason_counts
from ray_apps.features.batch import INPUT_COLUMNS, output_schema
from ray_apps.features.spec import FeatureSpec

_NO_TIME = np.iinfo(np.int64).min


class IncrementalEngine:
    """Features of a live stream of bars, one micro-batch at a time.

    Args:
        spec: the features to compute.

    Attributes:
        skipped: bars ignored so far because they were not newer than their symbol's last bar
            (replays and duplicates from an at-least-once stream).
        rejected: bars refused so far because they break a bar rule, per reason.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._plan = spec.plan
        self._index: dict[str, int] = {}
        self._symbols: list[str] = []
        self._states = np.zeros((0, self._plan.state_size))
        self._last_ts = np.zeros(0, dtype=np.int64)
        self._latest = np.zeros((0, len(self._plan.columns)))
        self.skipped = 0
        self.rejected: dict[str, int] = {}

    @property
    def symbols(self) -> list[str]:
        """Symbols seen so far, in order of first appearance."""
        return list(self._symbols)

    def update_arrays(
        self,
        symbols: Sequence[str],
        ts: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        open_: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advances the engine by a micro-batch of bars given as arrays.

        Args:
            symbols: each bar's symbol.
            ts: each bar's time as int64 microseconds since the epoch (UTC).
            high: high prices.
            low: low prices.
            close: close prices.
            volume: volumes.
            open_: open prices, when known (checked against high and low, not computed on).

        Returns:
            ``(accepted, values)``: a boolean mask of the bars applied, and the feature values
            of the accepted bars, one row each, in the spec's column order. A bar that breaks
            a bar rule is refused (counted in :attr:`rejected`), one not newer than its
            symbol's last bar is skipped (counted in :attr:`skipped`); neither touches the
            symbol's state.
        """
        symbols = np.asarray(symbols, dtype=object)
        arrays = [np.asarray(a, dtype=np.float64) for a in (high, low, close, volume)]
        ts = np.asarray(ts, dtype=np.int64)
        verdicts = bar_verdicts(*arrays, open_=open_, missing_symbol=_blank(symbols))
        good = verdicts == 0
        if not good.all():
            self.rejected = add_counts(self.rejected, reason_counts(verdicts))
            symbols, ts = symbols[good], ts[good]
            arrays = [a[good] for a in arrays]
        rows = self._rows(symbols)
        fresh = _accept(rows, ts, self._last_ts)
        if not fresh.all():
            self.skipped += int((~fresh).sum())
            rows, ts = rows[fresh], ts[fresh]
            arrays = [a[fresh] for a in arrays]
        values = np.empty((rows.shape[0], len(self._plan.columns)))
        kernels.run_rows(
            self._plan.plan,
            self._plan.params,
            self._states,
            rows,
            *(np.ascontiguousarray(a) for a in arrays),
            values,
        )
        self._last_ts[rows] = ts
        self._latest[rows] = values
        accepted = good.copy()
        accepted[good] = fresh
        return accepted, values

    def update(self, bars: pa.Table) -> pa.Table:
        """Advances the engine by a micro-batch of bars; returns the features of those applied.

        Args:
            bars: symbol, ts, high, low, close, volume (other columns are ignored), in time
                order within each symbol.

        Returns:
            ``symbol, ts`` and the spec's columns for every bar applied.
        """
        missing = [column for column in INPUT_COLUMNS if column not in bars.column_names]
        if missing:
            raise UserError(f"bars lack column(s) {missing}; need {list(INPUT_COLUMNS)}")
        ts = bars.column("ts")
        if not pa.types.is_timestamp(ts.type):
            raise UserError(f"bars: ts must be a timestamp, not {ts.type}")
        micros = pc.cast(ts, pa.timestamp("us", tz=ts.type.tz)).cast(pa.int64())
        opened = _floats(bars, "open") if "open" in bars.column_names else None
        accepted, values = self.update_arrays(
            bars.column("symbol").to_pylist(),
            micros.to_numpy(),
            *(_floats(bars, c) for c in ("high", "low", "close", "volume")),
            open_=opened,
        )
        kept = bars.filter(pa.array(accepted)) if not accepted.all() else bars
        keys = [
            kept.column("symbol").cast(pa.string()),
            pc.cast(kept.column("ts"), pa.timestamp("us", tz="UTC")),
        ]
        columns = keys + [pa.array(values[:, i]) for i in range(values.shape[1])]
        return pa.Table.from_arrays(columns, schema=output_schema(self.spec))

    def last_times(self, symbols: Sequence[str]) -> np.ndarray:
        """Each symbol's last applied bar time (int64 microseconds; the int64 minimum if none)."""
        index = self._index
        rows = [index.get(s, -1) for s in symbols]
        known = np.array(rows, dtype=np.int64)
        times = np.full(len(rows), _NO_TIME, dtype=np.int64)
        seen = known >= 0
        times[seen] = self._last_ts[known[seen]]
        return times

    def latest(self, symbols: Sequence[str] | None = None) -> pa.Table:
        """The latest feature vector of each symbol (all seen symbols by default)."""
        symbols = self._symbols if symbols is None else list(symbols)
        unknown = [s for s in symbols if s not in self._index]
        if unknown:
            raise UserError(f"no bars seen yet for symbol(s) {unknown[:5]}")
        rows = np.array([self._index[s] for s in symbols], dtype=np.int64)
        keys = [pa.array(symbols, pa.string()), pa.array(self._last_ts[rows], pa.int64())]
        keys[1] = keys[1].cast(pa.timestamp("us", tz="UTC"))
        values = self._latest[rows]
        columns = keys + [pa.array(values[:, i]) for i in range(values.shape[1])]
        return pa.Table.from_arrays(columns, schema=output_schema(self.spec))

    def save(self) -> bytes:
        """The engine's whole state as bytes (restore with :meth:`restore`)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            fingerprint=np.array(self.spec.fingerprint),
            symbols=np.array(self._symbols, dtype=object),
            states=self._states,
            last_ts=self._last_ts,
            latest=self._latest,
            skipped=np.array(self.skipped),
            rejected=np.array(json.dumps(self.rejected)),
        )
        return buffer.getvalue()

    @classmethod
    def restore(cls, data: bytes, spec: FeatureSpec) -> IncrementalEngine:
        """An engine continuing exactly where the saved one stopped.

        Raises:
            UserError: the state was saved under a different feature spec.
        """
        with np.load(io.BytesIO(data), allow_pickle=True) as saved:
            if str(saved["fingerprint"]) != spec.fingerprint:
                raise UserError(
                    f"saved feature state is for spec {saved['fingerprint']}, not "
                    f"{spec.fingerprint}; recompute from history after changing the spec"
                )
            engine = cls(spec)
            engine._symbols = [str(s) for s in saved["symbols"]]
            engine._index = {s: i for i, s in enumerate(engine._symbols)}
            engine._states = saved["states"].copy()
            engine._last_ts = saved["last_ts"].copy()
            engine._latest = saved["latest"].copy()
            engine.skipped = int(saved["skipped"])
            if "rejected" in saved.files:
                engine.rejected = json.loads(str(saved["rejected"]))
        return engine

    def _rows(self, symbols: Sequence[str]) -> np.ndarray:
        index = self._index
        rows = np.empty(len(symbols), dtype=np.int64)
        for i, symbol in enumerate(symbols):
            row = index.get(symbol)
            if row is None:
                row = self._add_symbol(symbol)
            rows[i] = row
        return rows

    def _add_symbol(self, symbol: str) -> int:
        row = len(self._symbols)
        if row == self._states.shape[0]:
            capacity = max(16, 2 * row)
            self._states = _grow(self._states, capacity, 0.0)
            self._last_ts = _grow(self._last_ts, capacity, _NO_TIME)
            self._latest = _grow(self._latest, capacity, np.nan)
        self._symbols.append(symbol)
        self._index[symbol] = row
        return row


def replay(
    engine: IncrementalEngine, bars: pa.Table, block_rows: int = 100_000
) -> Iterator[pa.Table]:
    """Features of a history of bars fed through ``engine`` as a stream would feed them.

    The bars go in time order, one micro-batch per bar time; the features come back in
    blocks of about ``block_rows`` rows. The engine's counts are final once the iterator is
    exhausted.
    """
    bars = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    times = bars.column("ts").cast(pa.int64()).to_numpy()
    edges = [0, *(np.flatnonzero(np.diff(times)) + 1).tolist(), bars.num_rows]
    chunk: list[pa.Table] = []
    chunk_rows = 0
    for first, last in itertools.pairwise(edges):
        chunk.append(engine.update(bars.slice(first, last - first)))
        chunk_rows += last - first
        if chunk_rows >= block_rows:
            yield pa.concat_tables(chunk)
            chunk, chunk_rows = [], 0
    if chunk:
        yield pa.concat_tables(chunk)


def _blank(symbols: np.ndarray) -> np.ndarray:
    return np.array([not s for s in symbols], dtype=bool)


def _floats(bars: pa.Table, column: str) -> np.ndarray:
    values = pc.cast(bars.column(column), pa.float64())
    return pc.fill_null(values, np.nan).to_numpy()


def _grow(array: np.ndarray, rows: int, fill: float) -> np.ndarray:
    grown = np.full((rows, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


def _accept(rows: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """Bars newer than their symbol's last bar, also within the batch (in batch order)."""
    accepted = ts > last_ts[rows]
    if rows.shape[0] > 1 and np.unique(rows).shape[0] < rows.shape[0]:
        latest: dict[int, int] = {}
        for i in range(rows.shape[0]):
            row = int(rows[i])
            previous = latest.get(row, int(last_ts[row]))
            accepted[i] = ts[i] > previous
            if accepted[i]:
                latest[row] = int(ts[i])
    return accepted
