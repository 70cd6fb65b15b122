"""Bar validation with quarantine: every input row is either accepted or kept with its reason.

The rules run as numpy operations on whole columns; text columns (symbol, interval) are
factorized first so that trimming and checking touch each distinct value once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from ray_apps.marketdata.duplicates import SeenKeys, first_occurrences
from ray_apps.marketdata.schema import (
    BAR_COLUMNS,
    BAR_TABLE_SCHEMA,
    INTERVAL_PATTERN,
    PRICE_COLUMNS,
    infer_interval,
)

#: Quarantine reasons, in the order the rules are applied (a row gets the first that fails).
REASONS = (
    "unknown_column",
    "missing_symbol",
    "unparseable_ts",
    "invalid_interval",
    "non_finite_price",
    "non_positive_price",
    "non_finite_volume",
    "negative_volume",
    "high_below_open_close",
    "low_above_open_close",
    "duplicate_symbol_ts",
)
QUARANTINE_COLUMNS = ("row_number", "reason", "field", "raw")


@dataclass(frozen=True)
class ValidationResult:
    """The rows that passed, typed as bars, and the rows that did not, with their reasons.

    Attributes:
        bars: the accepted rows as an Arrow table in ``BAR_TABLE_SCHEMA`` (dictionary-encoded
            symbol and interval): what the offline store takes.
        quarantined: the rejected rows (``QUARANTINE_COLUMNS``).
    """

    bars: pa.Table
    quarantined: pd.DataFrame

    @cached_property
    def accepted(self) -> pd.DataFrame:
        """The accepted rows as a pandas frame (``BAR_COLUMNS``, text columns as ``object``)."""
        columns = {}
        for name in BAR_COLUMNS:
            column = self.bars.column(name).combine_chunks()
            if isinstance(column, pa.DictionaryArray):
                words = np.asarray(column.dictionary.to_pylist(), dtype=object)
                codes = column.indices.to_numpy(zero_copy_only=False)
                columns[name] = pd.Series(words[codes] if len(words) else [], dtype=object)
            else:
                columns[name] = column.to_pandas()
        return pd.DataFrame(columns, columns=list(BAR_COLUMNS))

    def reason_counts(self) -> dict[str, int]:
        """How many rows each reason quarantined."""
        return {str(k): int(v) for k, v in self.quarantined["reason"].value_counts().items()}


class _Verdicts:
    """The first failing reason and field of each row; a row is valid while it has none."""

    def __init__(self, n: int) -> None:
        self.reason = np.zeros(n, dtype=np.int8)  # 0: valid, else 1 + index in REASONS
        self.field = np.full(n, "", dtype=object)

    @property
    def valid(self) -> np.ndarray:
        return self.reason == 0

    def flag(self, failed: np.ndarray, reason: str, field: str) -> None:
        hit = np.asarray(failed, dtype=bool) & self.valid
        if hit.any():
            self.reason[hit] = REASONS.index(reason) + 1
            self.field[hit] = field


@dataclass(frozen=True)
class _Text:
    """A text column factorized: one code per row (-1: missing or blank) and the values."""

    codes: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, column: pd.Series) -> _Text:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        if len(uniques) == 0:
            return cls(np.full(len(codes), -1, dtype=np.int64), np.array([], dtype=object))
        stripped = pd.Index(np.asarray(uniques, dtype=object)).astype(str).str.strip()
        merged, values = pd.factorize(stripped)  # " A" and "A" become one value
        codes = np.where(codes >= 0, merged[np.maximum(codes, 0)], -1)
        blank = np.flatnonzero(np.asarray(values) == "")
        if blank.size:
            codes = np.where(np.isin(codes, blank), -1, codes)
        return cls(codes.astype(np.int64), np.asarray(values, dtype=object))

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """The values of the rows in ``mask`` (none of them missing)."""
        return self.values[self.codes[mask]]

    def dictionary(self, mask: np.ndarray) -> pa.DictionaryArray:
        """The rows in ``mask`` (none of them missing) as an Arrow dictionary array."""
        return pa.DictionaryArray.from_arrays(
            pa.array(self.codes[mask].astype(np.int32)), pa.array(self.values, pa.string())
        )


def value_rules(
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> Iterator[tuple[np.ndarray, str, str]]:
    """The value rules of a bar, in the order they apply: (failed mask, reason, field).

    The one definition of what a good bar's numbers are: :func:`validate_bars` applies them to
    ingested rows and every feature engine to its input bars
    (:func:`ray_apps.features.bar_checks.bar_verdicts`).
    """
    prices = {"open": open, "high": high, "low": low, "close": close}
    with np.errstate(invalid="ignore"):
        for field, values in prices.items():
            yield ~np.isfinite(values), "non_finite_price", field
        for field, values in prices.items():
            yield values <= 0, "non_positive_price", field
        yield ~np.isfinite(volume), "non_finite_volume", "volume"
        yield volume < 0, "negative_volume", "volume"
        yield high < np.maximum(open, close), "high_below_open_close", "high"
        yield low > np.minimum(open, close), "low_above_open_close", "low"


def validate_bars(
    raw: pd.DataFrame,
    interval: str | None = None,
    first_row_number: int = 0,
    *,
    row_numbers: np.ndarray | None = None,
    seen: SeenKeys | None = None,
) -> ValidationResult:
    """Check raw rows against the bar rules and split them into accepted and quarantined.

    Args:
        raw: Input rows; columns ``symbol, ts, open, high, low, close, volume`` and optionally
            ``interval``, as strings or typed values. Naive timestamps are taken as UTC.
        interval: Bar interval for rows without an ``interval`` column; inferred from the
            timestamps when None.
        first_row_number: Row number of ``raw``'s first row in its source, for the quarantine.
        row_numbers: The source row number of each row of ``raw`` (overrides
            ``first_row_number``; for rows picked out of a larger chunk).
        seen: Keys accepted from earlier chunks of the same ingest; a row repeating one is a
            duplicate, and the keys accepted here are added to it.

    Returns:
        Accepted rows as bars (``BAR_COLUMNS``) and quarantined rows with reason, field and the
        original values as JSON. Every input row is in exactly one of the two.
    """
    n = len(raw)
    raw = raw.reset_index(drop=True)
    verdicts = _Verdicts(n)

    unknown = sorted(set(raw.columns) - set(BAR_COLUMNS))
    if unknown:
        verdicts.flag(np.ones(n, dtype=bool), "unknown_column", ",".join(map(str, unknown)))

    symbol = _Text.of(_column(raw, "symbol"))
    verdicts.flag(symbol.codes < 0, "missing_symbol", "symbol")
    ts = _parse_ts(_column(raw, "ts"))
    ts_us = ts.to_numpy(dtype="datetime64[us]").view(np.int64)
    verdicts.flag(ts.isna().to_numpy(), "unparseable_ts", "ts")
    intervals = _intervals(raw, symbol, ts, interval, verdicts)
    numbers = {c: _numbers(_column(raw, c)) for c in (*PRICE_COLUMNS, "volume")}
    for failed, reason, field in value_rules(**numbers):
        verdicts.flag(failed, reason, field)

    valid = np.flatnonzero(verdicts.valid)
    group = symbol.codes[valid] * len(intervals.values) + intervals.codes[valid]
    first = first_occurrences(group, ts_us[valid])
    if seen is not None:
        names = [(s, i) for s in symbol.values for i in intervals.values]
        first &= seen.add_new(names, group, ts_us[valid], first)
    duplicate = np.zeros(n, dtype=bool)
    duplicate[valid[~first]] = True
    verdicts.flag(duplicate, "duplicate_symbol_ts", "ts")

    ok = verdicts.valid
    bars = pa.Table.from_arrays(
        [
            symbol.dictionary(ok),
            intervals.dictionary(ok),
            pa.array(ts_us[ok], pa.int64()).view(BAR_TABLE_SCHEMA.field("ts").type),
            *(pa.array(values[ok], pa.float64()) for values in numbers.values()),
        ],
        schema=BAR_TABLE_SCHEMA,
    )
    bad = np.flatnonzero(~ok)
    numbers_of_rows = (
        np.asarray(row_numbers)[bad] if row_numbers is not None else bad + first_row_number
    )
    quarantined = pd.DataFrame(
        {
            "row_number": numbers_of_rows.astype("uint64"),
            "reason": np.asarray(REASONS, dtype=object)[verdicts.reason[bad] - 1],
            "field": verdicts.field[bad].astype(str),
            "raw": _as_json(raw.iloc[bad]),
        },
        columns=list(QUARANTINE_COLUMNS),
    )
    return ValidationResult(bars=bars, quarantined=quarantined)


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    """A column, or all-missing values when the input lacks it (each row then fails a rule)."""
    if name not in raw.columns:
        return pd.Series([None] * len(raw), index=raw.index, dtype=object)
    return raw[name]


def _numbers(values: pd.Series) -> np.ndarray:
    """A column as float64; values that are not numbers become NaN."""
    if values.dtype == np.float64:
        return values.to_numpy()
    parsed = pd.to_numeric(values, errors="coerce")
    return np.asarray(parsed.astype("float64").to_numpy(na_value=np.nan), dtype=np.float64)


def _parse_ts(values: pd.Series) -> pd.Series:
    """Timestamps in UTC at microsecond precision; unparseable values become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = values.dt.tz_localize("UTC")
    else:
        text = values.astype("string").str.strip()
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[us, UTC]")


def _intervals(
    raw: pd.DataFrame, symbol: _Text, ts: pd.Series, interval: str | None, verdicts: _Verdicts
) -> _Text:
    """The interval of each row: its own column, the given one, or one inferred from ``ts``."""
    if "interval" in raw.columns:
        values = _Text.of(raw["interval"])
        known = np.array([bool(INTERVAL_PATTERN.match(v)) for v in values.values], dtype=bool)
        ok = (values.codes >= 0) & known[np.maximum(values.codes, 0)]
        verdicts.flag(~ok, "invalid_interval", "interval")
        return values
    n = len(raw)
    if interval is None:
        valid = verdicts.valid
        if not valid.any():
            return _Text(np.zeros(n, dtype=np.int64), np.array([""], dtype=object))
        top = np.bincount(symbol.codes[valid]).argmax()
        interval = infer_interval(ts[valid & (symbol.codes == top)])
    return _Text(np.zeros(n, dtype=np.int64), np.array([interval], dtype=object))


def _as_json(rows: pd.DataFrame) -> list[str]:
    """Each row's original values as a JSON object of strings."""
    if rows.empty:
        return []
    text = rows.astype(str)
    return [json.dumps(record) for record in text.to_dict("records")]
