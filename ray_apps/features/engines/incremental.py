"""The incremental engine: per-symbol state updated bar by bar, for the stream consumer.

Each symbol owns one float64 state vector (:mod:`ray_apps.features.kernels`); a micro-batch of
bars for many symbols is one compiled call that advances each bar's symbol in O(1). Because
the batch engines run the very same per-bar kernels, the values equal theirs at every bar.
A bar that breaks the bar rules (:mod:`ray_apps.features.bar_checks`: a NaN, infinite or
non-positive price, a bad volume, an inconsistent high or low) is refused before it reaches
the kernels: its symbol's state is left as it was, and the refusal is counted by reason.

A micro-batch costs a few compiled calls and no Python per bar: symbols map to state rows
through one dict lookup each (only a new symbol takes the slow path), the bar rules and the
replay check run in compiled loops, and the values come back as one array.

The whole engine (symbols, states, last timestamps, latest vectors, counts) saves to bytes and
restores, so a consumer can checkpoint anywhere in a series. The bytes are a short header
(format, spec fingerprint, counts, the symbols, re-encoded only when a symbol was added) and
the raw state arrays, so a checkpoint costs about one copy of the state; checkpoints of the
first format (numpy ``.npz``) still restore.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import sys
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from ray_apps.errors import UserError
from ray_apps.features import kernels
from ray_apps.features.bar_checks import (
    MISSING_SYMBOL,
    add_counts,
    compiled_verdicts,
    float_column,
    reason_counts,
)
from ray_apps.features.batch import INPUT_COLUMNS, output_schema
from ray_apps.features.spec import FeatureSpec

_NO_TIME = np.iinfo(np.int64).min
#: The first bytes of a checkpoint in the current format; then :data:`_SIZES`.
_MAGIC = b"ray_apps.incremental.v2\n"
#: Byte lengths of the checkpoint's JSON header and its JSON symbols list, and the symbols.
_SIZES = struct.Struct("<QQQ")
_NPZ_MAGIC = b"PK\x03\x04"


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
        self._fingerprint = spec.fingerprint  # a hash of the spec: computed once
        self._schema = output_schema(spec)  # and its features table's schema
        self._index: dict[str, int] = {}
        self._symbols: list[str] = []
        self._symbols_json: bytes | None = None  # the symbols' encoding in checkpoints
        self._header: tuple[tuple[int, dict[str, int]], bytes] | None = None  # and the counts'
        self._states = np.zeros((0, self._plan.state_size))
        self._last_ts = np.zeros(0, dtype=np.int64)
        self._latest = np.zeros((0, len(self._plan.columns)))
        self._kernel = None  # the spec's compiled kernels, loaded at the first bar
        self._last_list: tuple[list[str], np.ndarray] | None = None  # see _known_rows
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
        high, low, close, volume = (_contiguous(a, np.float64) for a in (high, low, close, volume))
        ts = _contiguous(ts, np.int64)
        codes = np.zeros(ts.shape[0], dtype=np.int8)
        rows = self._known_rows(symbols)
        if rows is None:  # a new or a blank symbol: the slow path
            codes[[not s for s in symbols]] = MISSING_SYMBOL
        opened = close if open_ is None else _contiguous(open_, np.float64)
        compiled_verdicts(high, low, close, volume, opened, codes)
        if rows is None:
            rows = self._rows(symbols, codes)
        accepted = np.empty(ts.shape[0], dtype=bool)
        refused, skipped = _admit(rows, ts, codes, self._last_ts, accepted)
        if refused:
            self.rejected = add_counts(self.rejected, reason_counts(codes))
        self.skipped += skipped
        values = np.empty((ts.shape[0], len(self._plan.columns)))
        if self._kernel is None:
            plan = self._plan
            self._kernel = kernels.fused_kernel(plan.plan, plan.params, plan.state_size)
        self._kernel.rows(self._states, rows, high, low, close, volume, values)
        _keep_latest(rows, values, self._latest)
        if refused or skipped:
            values = values[accepted]
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
        opened = float_column(bars, "open") if "open" in bars.column_names else None
        accepted, values = self.update_arrays(
            bars.column("symbol").to_pylist(),
            micros.to_numpy(),
            *(float_column(bars, c) for c in ("high", "low", "close", "volume")),
            open_=opened,
        )
        kept = bars.filter(pa.array(accepted)) if not accepted.all() else bars
        return self.feature_table(kept.column("symbol"), kept.column("ts"), values)

    def feature_table(
        self,
        symbols: pa.Array | pa.ChunkedArray,
        ts: pa.Array | pa.ChunkedArray,
        values: np.ndarray,
    ) -> pa.Table:
        """The features table (``symbol, ts`` and the spec's columns) of bars and their values.

        Args:
            symbols: each row's symbol.
            ts: each row's time (a timestamp of any unit).
            values: float64 ``(rows, columns)``, as :meth:`update_arrays` returns them.
        """
        keys = [pc.cast(symbols, pa.string()), pc.cast(ts, pa.timestamp("us", tz="UTC"))]
        rows, width = values.shape
        buffer = pa.py_buffer(np.ascontiguousarray(values.T))  # a column after another
        size = 8 * rows
        columns = [
            pa.Array.from_buffers(pa.float64(), rows, [None, buffer.slice(i * size, size)])
            for i in range(width)
        ]
        return pa.Table.from_arrays(keys + columns, schema=self._schema)

    def last_times(self, symbols: Sequence[str]) -> np.ndarray:
        """Each symbol's last applied bar time (int64 microseconds; the int64 minimum if none)."""
        rows = np.fromiter(
            map(self._index.get, symbols, itertools.repeat(-1)), np.int64, len(symbols)
        )
        times = np.full(rows.shape[0], _NO_TIME, dtype=np.int64)
        known = rows >= 0
        times[known] = self._last_ts[rows[known]]
        return times

    def latest(self, symbols: Sequence[str] | None = None) -> pa.Table:
        """The latest feature vector of each symbol (all seen symbols by default)."""
        symbols = self._symbols if symbols is None else list(symbols)
        unknown = [s for s in symbols if s not in self._index]
        if unknown:
            raise UserError(f"no bars seen yet for symbol(s) {unknown[:5]}")
        rows = np.fromiter(map(self._index.__getitem__, symbols), np.int64, len(symbols))
        times = pa.array(self._last_ts[rows], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        return self.feature_table(pa.array(symbols, pa.string()), times, self._latest[rows])

    def save(self) -> bytes:
        """The engine's whole state as bytes (restore with :meth:`restore`).

        A header (format, spec fingerprint, sizes, counts, symbols), then the state, last
        times and latest vectors of each symbol as raw little-endian arrays.
        """
        count = len(self._symbols)
        if self._symbols_json is None:
            self._symbols_json = json.dumps(self._symbols).encode()
        counts = (self.skipped, self.rejected)
        if self._header is None or self._header[0] != counts:
            header = {
                "fingerprint": self._fingerprint,
                "state_size": self._plan.state_size,
                "columns": len(self._plan.columns),
                "skipped": self.skipped,
                "rejected": self.rejected,
            }
            self._header = ((self.skipped, dict(self.rejected)), json.dumps(header).encode())
        header = self._header[1]
        return b"".join(
            (
                _MAGIC,
                _SIZES.pack(len(header), len(self._symbols_json), count),
                header,
                self._symbols_json,
                _little_endian(self._states[:count]),
                _little_endian(self._last_ts[:count]),
                _little_endian(self._latest[:count]),
            )
        )

    @classmethod
    def restore(cls, data: bytes, spec: FeatureSpec) -> IncrementalEngine:
        """An engine continuing exactly where the saved one stopped.

        Reads both the current format and the first one (numpy ``.npz``).

        Raises:
            UserError: the state was saved under a different feature spec, or the bytes are
                not an engine's checkpoint.
        """
        if not data.startswith((_MAGIC, _NPZ_MAGIC)):
            raise UserError("saved feature state: not an incremental engine checkpoint")
        try:
            if data.startswith(_MAGIC):
                return cls._restore_raw(memoryview(data)[len(_MAGIC) :], spec)
            return cls._restore_npz(data, spec)
        except (ValueError, KeyError, TypeError, struct.error, zipfile.BadZipFile) as error:
            raise UserError(f"saved feature state: a damaged checkpoint ({error})") from error

    @classmethod
    def _restore_raw(cls, data: memoryview, spec: FeatureSpec) -> IncrementalEngine:
        header_size, symbols_size, count = _SIZES.unpack_from(data)
        at = _SIZES.size
        header = json.loads(bytes(data[at : at + header_size]))
        at += header_size
        _check_fingerprint(header["fingerprint"], spec)
        engine = cls(spec)
        plan = engine._plan
        if (header["state_size"], header["columns"]) != (plan.state_size, len(plan.columns)):
            raise UserError(
                "saved feature state has another state layout than this version's kernels; "
                "recompute from history"
            )
        symbols_json = bytes(data[at : at + symbols_size])
        at += symbols_size
        arrays = []
        for dtype, width in (("<f8", plan.state_size), ("<i8", 0), ("<f8", len(plan.columns))):
            items = count * max(width, 1)
            array = np.frombuffer(data, dtype=dtype, count=items, offset=at)
            at += array.nbytes
            arrays.append(array.reshape((count, width) if width else (count,)))
        engine._set(json.loads(symbols_json), *arrays)
        engine._symbols_json = symbols_json
        engine.skipped = int(header["skipped"])
        engine.rejected = {str(k): int(v) for k, v in header["rejected"].items()}
        return engine

    @classmethod
    def _restore_npz(cls, data: bytes, spec: FeatureSpec) -> IncrementalEngine:
        """A checkpoint of the first format: ``np.savez`` of the engine's arrays."""
        with np.load(io.BytesIO(data), allow_pickle=True) as saved:
            _check_fingerprint(str(saved["fingerprint"]), spec)
            engine = cls(spec)
            symbols = [str(s) for s in saved["symbols"]]
            engine._set(symbols, saved["states"], saved["last_ts"], saved["latest"])
            engine.skipped = int(saved["skipped"])
            if "rejected" in saved.files:
                engine.rejected = json.loads(str(saved["rejected"]))
        return engine

    def _set(
        self, symbols: list[str], states: np.ndarray, last_ts: np.ndarray, latest: np.ndarray
    ) -> None:
        """Takes restored arrays as the engine's own (copies, native byte order)."""
        self._symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self._states = np.array(states, dtype=np.float64, order="C")
        self._last_ts = np.array(last_ts, dtype=np.int64)
        self._latest = np.array(latest, dtype=np.float64, order="C")

    def _known_rows(self, symbols: Sequence[str]) -> np.ndarray | None:
        """Each bar's state row, or None if a symbol is new or blank.

        A stream's micro-batches often list the same symbols in the same order (one bar per
        symbol and bar time): comparing with the last such list costs a fraction of the
        lookups, so a repeated list reuses its rows.
        """
        repeated = self._last_list
        if repeated is not None and type(symbols) is list and symbols == repeated[0]:
            return repeated[1].copy()
        try:
            rows = np.fromiter(map(self._index.__getitem__, symbols), np.int64, len(symbols))
        except KeyError:
            return None
        if type(symbols) is list:
            self._last_list = (list(symbols), rows.copy())
        return rows

    def _rows(self, symbols: Sequence[str], codes: np.ndarray) -> np.ndarray:
        """Each bar's state row, adding the new symbols of good bars (-1: no row)."""
        index = self._index
        rows = np.empty(len(symbols), dtype=np.int64)
        for i, symbol in enumerate(symbols):
            row = index.get(symbol, -1)
            if row < 0 and codes[i] == 0:
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
        self._symbols_json = None
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


def _check_fingerprint(saved: str, spec: FeatureSpec) -> None:
    if saved != spec.fingerprint:
        raise UserError(
            f"saved feature state is for spec {saved}, not {spec.fingerprint}; "
            "recompute from history after changing the spec"
        )


def _contiguous(values: np.ndarray, dtype: type) -> np.ndarray:
    """``values`` as a contiguous, writable array of ``dtype``.

    Writable too, so that the compiled calls always see one type per argument: numba compiles
    a function again for read-only arrays (Arrow's zero-copy ones), which takes a minute on a
    busy machine the first time a consumer meets them.
    """
    if values.dtype == dtype and values.flags.c_contiguous and values.flags.writeable:
        return values
    return np.array(values, dtype=dtype, order="C")  # a copy (np.require cost 4x as much)


def _little_endian(values: np.ndarray) -> np.ndarray:
    """``values`` as checkpoints hold them (the array itself on a little-endian machine)."""
    if sys.byteorder == "little":
        return values
    return values.astype(values.dtype.newbyteorder("<"))


def _grow(array: np.ndarray, rows: int, fill: float) -> np.ndarray:
    grown = np.full((rows, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


@njit(cache=True, nogil=True)
def _admit(rows, ts, codes, last_ts, accepted):
    """Marks the good bars newer than their symbol's last bar (also within the batch, in order).

    Sets each accepted bar's time as its symbol's last, and the row of every other bar to -1
    (the kernel skips it). Returns the numbers of bars refused (a code) and skipped.
    """
    refused = 0
    skipped = 0
    for i in range(rows.shape[0]):
        if codes[i] != 0:
            refused += 1
        elif ts[i] <= last_ts[rows[i]]:
            skipped += 1
        else:
            accepted[i] = True
            last_ts[rows[i]] = ts[i]
            continue
        accepted[i] = False
        rows[i] = -1
    return refused, skipped


@njit(cache=True, nogil=True)
def _keep_latest(rows, values, latest):
    """Each applied bar's values as its symbol's latest (in order: the last bar wins)."""
    for i in range(rows.shape[0]):
        r = rows[i]
        if r >= 0:
            for j in range(values.shape[1]):  # element by element: a row slice costs 4x
                latest[r, j] = values[i, j]
