"""The incremental engine: per-symbol state updated bar by bar, for the stream consumer.

Each symbol owns one float64 state vector (:mod:`ray_apps.features.kernels`); a micro-batch of
bars for many symbols is one compiled call that advances each bar's symbol in O(1). Because
the batch engines run the very same per-bar kernels, the values equal theirs at every bar.
The whole engine (symbols, states, last timestamps, latest vectors) saves to bytes and
restores, so a consumer can checkpoint anywhere in a series.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_apps.errors import UserError
from ray_apps.features import kernels
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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advances the engine by a micro-batch of bars given as arrays.

        Args:
            symbols: each bar's symbol.
            ts: each bar's time as int64 microseconds since the epoch (UTC).
            high: high prices.
            low: low prices.
            close: close prices.
            volume: volumes.

        Returns:
            ``(accepted, values)``: a boolean mask of the bars applied (a bar not newer than
            its symbol's last bar is skipped), and the feature values of the accepted bars,
            one row each, in the spec's column order.
        """
        rows = self._rows(symbols)
        ts = np.asarray(ts, dtype=np.int64)
        accepted = _accept(rows, ts, self._last_ts)
        if not accepted.all():
            self.skipped += int((~accepted).sum())
            rows, ts = rows[accepted], ts[accepted]
            high, low, close, volume = (
                np.asarray(a)[accepted] for a in (high, low, close, volume)
            )
        values = np.empty((rows.shape[0], len(self._plan.columns)))
        kernels.run_rows(
            self._plan.plan,
            self._plan.params,
            self._states,
            rows,
            *(np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close, volume)),
            values,
        )
        self._last_ts[rows] = ts
        self._latest[rows] = values
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
        accepted, values = self.update_arrays(
            bars.column("symbol").to_pylist(),
            micros.to_numpy(),
            *(bars.column(c).to_numpy() for c in ("high", "low", "close", "volume")),
        )
        kept = bars.filter(pa.array(accepted)) if not accepted.all() else bars
        keys = [
            kept.column("symbol").cast(pa.string()),
            pc.cast(kept.column("ts"), pa.timestamp("us", tz="UTC")),
        ]
        columns = keys + [pa.array(values[:, i]) for i in range(values.shape[1])]
        return pa.Table.from_arrays(columns, schema=output_schema(self.spec))

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
