"""Features of whole series in one process: the per-symbol function every batch engine runs.

:func:`compute_table` takes bars (any order, any number of symbols), sorts them by symbol and
time, runs the compiled kernels along each symbol's series and returns ``symbol, ts`` and the
spec's columns. The Ray Data engine maps it over blocks that hold whole symbols; the Spark
engine calls it from ``mapInArrow`` on Arrow tables of whole symbols.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from ray_apps.errors import UserError
from ray_apps.features import kernels
from ray_apps.features.bar_checks import check_bars
from ray_apps.features.spec import FeatureSpec

INPUT_COLUMNS = ("symbol", "ts", "high", "low", "close", "volume")
"""Columns every engine needs."""
CHECKED_COLUMNS = ("open",)
"""Columns read when the input has them, only to check the bars (see :mod:`.bar_checks`)."""


def output_schema(spec: FeatureSpec) -> pa.Schema:
    """The Arrow schema of :func:`compute_table`'s result."""
    fields = [pa.field("symbol", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC"))]
    return pa.schema(fields + [pa.field(column, pa.float64()) for column in spec.columns])


def compute_table(bars: pa.Table, spec: FeatureSpec) -> pa.Table:
    """Computes the spec's features for every symbol in ``bars``.

    Args:
        bars: a table with at least symbol, ts, high, low, close and volume; each symbol's
            series must be complete (features depend on the whole history).
        spec: the features to compute.

    Returns:
        ``symbol, ts`` and one float64 column per feature, each symbol's rows together in
        time order (input that is already so keeps its order); values
        before a feature's warm-up are NaN.

    Raises:
        UserError: a column is missing, or a (symbol, ts) pair repeats.
    """
    missing = [column for column in INPUT_COLUMNS if column not in bars.column_names]
    if missing:
        raise UserError(f"bars lack column(s) {missing}; need {list(INPUT_COLUMNS)}")
    bars = normalize_bars(bars.select(list(INPUT_COLUMNS)))
    bars, starts = _group_by_symbol(bars)
    symbol = bars.column("symbol")
    ts = bars.column("ts")
    plan = spec.plan
    # one Arrow buffer, a column after another: the memory pool reuses it from call to call
    buffer = pa.allocate_buffer(8 * bars.num_rows * len(plan.columns))
    out = np.frombuffer(buffer, dtype=np.float64).reshape(len(plan.columns), bars.num_rows).T
    kernels.run_series(
        plan.plan,
        plan.params,
        plan.state_size,
        starts,
        *(_float(bars, column) for column in ("high", "low", "close", "volume")),
        out,
    )
    size = 8 * bars.num_rows
    values = [
        pa.Array.from_buffers(pa.float64(), bars.num_rows, [None, buffer.slice(i * size, size)])
        for i in range(len(plan.columns))
    ]
    columns = [symbol, ts, *values]
    return pa.Table.from_arrays(columns, schema=output_schema(spec))


def compute_frame(bars: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """:func:`compute_table` for a pandas frame (returns a frame with a default index)."""
    table = pa.Table.from_pandas(bars, preserve_index=False)
    return compute_table(table, spec).to_pandas()


def compute_checked(bars: pa.Table, spec: FeatureSpec) -> tuple[pa.Table, dict[str, int]]:
    """:func:`compute_table` of the bars that pass the bar rules, and the others per reason.

    Text times that do not parse count as ``unparseable_ts``; a bad bar never reaches the
    kernels, so the symbol's later values are those of its series without that bar.
    """
    missing = [column for column in INPUT_COLUMNS if column not in bars.column_names]
    if missing:
        raise UserError(f"bars lack column(s) {missing}; need {list(INPUT_COLUMNS)}")
    kept = [c for c in (*INPUT_COLUMNS, *CHECKED_COLUMNS) if c in bars.column_names]
    good, rejected = check_bars(normalize_bars(bars.select(kept), coerce=True))
    return compute_table(good, spec), rejected


def normalize_bars(bars: pa.Table, coerce: bool = False) -> pa.Table:
    """Symbols as strings and times as UTC microseconds (naive times are taken as UTC).

    Args:
        bars: a table whose first two columns are symbol and ts.
        coerce: text times that do not parse become null instead of an error.

    Raises:
        UserError: a text time does not parse (without ``coerce``), or ts is not a time.
    """
    symbol = bars.column("symbol")
    if not pa.types.is_string(symbol.type):
        bars = bars.set_column(0, "symbol", pc.cast(symbol, pa.string()))
    ts = bars.column("ts")
    if ts.type == pa.timestamp("us", tz="UTC"):
        return bars
    if pa.types.is_string(ts.type) or pa.types.is_large_string(ts.type):
        errors = "coerce" if coerce else "raise"
        try:
            parsed = pd.to_datetime(ts.to_pandas(), utc=True, format="ISO8601", errors=errors)
        except (ValueError, TypeError) as error:
            raise UserError(f"bars: ts is not an ISO-8601 time: {error}") from None
        ts = pa.chunked_array([pa.Array.from_pandas(parsed.astype("datetime64[us, UTC]"))])
    elif pa.types.is_date(ts.type):
        ts = pc.cast(ts, pa.timestamp("us"))
    elif not pa.types.is_timestamp(ts.type):
        raise UserError(f"bars: ts must be a time, not {ts.type}")
    if ts.type.tz is None:
        ts = pc.assume_timezone(ts, "UTC")
    return bars.set_column(1, "ts", pc.cast(ts, pa.timestamp("us", tz="UTC")))


def _float(bars: pa.Table, column: str) -> np.ndarray:
    values = _array(bars, column)
    if values.type != pa.float64():
        values = pc.cast(values, pa.float64())
    return values.to_numpy(zero_copy_only=False)


def _group_by_symbol(bars: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Bars with each symbol's rows together in time order, and the offsets of each run.

    Input already grouped and in time order (what the store and the Ray Data engine hand
    over) is used as is; anything else is sorted once. Repeated (symbol, ts) pairs are an error.
    """
    n = bars.num_rows
    if n == 0:
        return bars, np.zeros(1, dtype=np.int64)
    symbol = _array(bars, "symbol")
    if symbol.null_count:
        symbol = pc.fill_null(symbol, "")
    ts = _array(bars, "ts")
    if ts.null_count:
        raise UserError(f"bars: ts is missing in {ts.null_count} row(s)")
    times = ts.view(pa.int64()).to_numpy()
    starts, whole, repeated, first = _runs(symbol, times)
    if not whole:
        codes = pc.dictionary_encode(symbol).indices.to_numpy(zero_copy_only=False)
        order = np.lexsort((times, codes))
        bars = bars.take(order)
        symbol = symbol.take(order)
        times = times[order]
        starts, _, repeated, first = _runs(symbol, times)
    if repeated:
        raise UserError(
            f"bars repeat (symbol, ts) = ({bars.column('symbol')[first].as_py()}, "
            f"{bars.column('ts')[first].as_py()}) ({repeated} repeated row(s)); "
            "deduplicate before computing features"
        )
    return bars, starts


def _array(bars: pa.Table, column: str) -> pa.Array:
    chunked = bars.column(column)
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()


def _runs(symbol: pa.Array, times: np.ndarray) -> tuple[np.ndarray, bool, int, int]:
    """Runs of equal symbols: their offsets, whether whole, and the repeated (symbol, ts) rows.

    Whole means each symbol has one run, in time order. Repeats are counted within runs (so
    only once the bars are whole): how many rows repeat the one before, and the first of them.
    """
    same = pc.equal(symbol[1:], symbol[:-1]).to_numpy(zero_copy_only=False)
    starts, ordered, repeated, first = _run_facts(same, times)
    whole = ordered and pc.count_distinct(symbol.take(starts[:-1])).as_py() == len(starts) - 1
    return starts, whole, repeated, first


@njit(cache=True, nogil=True)
def _run_facts(same: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, bool, int, int]:
    """One pass: run offsets, times in order within runs, rows repeating the one before."""
    n = times.shape[0]
    starts = np.empty(n + 1, dtype=np.int64)
    starts[0] = 0
    runs = 1
    ordered = True
    repeated = 0
    first = -1
    for i in range(1, n):
        if not same[i - 1]:
            starts[runs] = i
            runs += 1
        elif times[i] < times[i - 1]:
            ordered = False
        elif times[i] == times[i - 1]:
            repeated += 1
            if first < 0:
                first = i
    starts[runs] = n
    return starts[: runs + 1].copy(), ordered, repeated, first
