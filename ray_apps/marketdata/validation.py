"""Bar validation with quarantine: every input row is either accepted or kept with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ray_apps.marketdata.schema import (
    BAR_COLUMNS,
    INTERVAL_PATTERN,
    PRICE_COLUMNS,
    REQUIRED_INPUT_COLUMNS,
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
    """The rows that passed, typed as bars, and the rows that did not, with their reasons."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame

    def reason_counts(self) -> dict[str, int]:
        """How many rows each reason quarantined."""
        return {str(k): int(v) for k, v in self.quarantined["reason"].value_counts().items()}


class _Verdicts:
    """The first failing reason and field of each row; a row is valid while it has none."""

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)
        self.field = np.full(n, "", dtype=object)

    @property
    def valid(self) -> np.ndarray:
        return pd.isna(self.reason)

    def flag(self, failed: np.ndarray, reason: str, field: str) -> None:
        hit = failed & self.valid
        self.reason[hit] = reason
        self.field[hit] = field


def validate_bars(
    raw: pd.DataFrame, interval: str | None = None, first_row_number: int = 0
) -> ValidationResult:
    """Check raw rows against the bar rules and split them into accepted and quarantined.

    Args:
        raw: Input rows; columns ``symbol, ts, open, high, low, close, volume`` and optionally
            ``interval``, as strings or typed values. Naive timestamps are taken as UTC.
        interval: Bar interval for rows without an ``interval`` column; inferred from the
            timestamps when None.
        first_row_number: Row number of ``raw``'s first row in its source, for the quarantine.

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

    missing = [c for c in REQUIRED_INPUT_COLUMNS if c not in raw.columns]
    bars = pd.DataFrame(index=raw.index)
    bars["symbol"] = _column(raw, "symbol", missing).astype("string").str.strip()
    verdicts.flag(
        bars["symbol"].isna().to_numpy() | (bars["symbol"] == "").to_numpy(),
        "missing_symbol",
        "symbol",
    )
    bars["ts"] = _parse_ts(_column(raw, "ts", missing))
    verdicts.flag(bars["ts"].isna().to_numpy(), "unparseable_ts", "ts")
    bars["interval"] = _intervals(raw, bars, interval, verdicts)
    numbers = {
        c: pd.to_numeric(_column(raw, c, missing), errors="coerce").astype("float64")
        for c in (*PRICE_COLUMNS, "volume")
    }
    for col in PRICE_COLUMNS:
        verdicts.flag(~np.isfinite(numbers[col].to_numpy()), "non_finite_price", col)
    for col in PRICE_COLUMNS:
        verdicts.flag(numbers[col].to_numpy() <= 0, "non_positive_price", col)
    volume = numbers["volume"].to_numpy()
    verdicts.flag(~np.isfinite(volume), "non_finite_volume", "volume")
    verdicts.flag(volume < 0, "negative_volume", "volume")
    o, h, lo, c = (numbers[k].to_numpy() for k in PRICE_COLUMNS)
    verdicts.flag(h < np.maximum(o, c), "high_below_open_close", "high")
    verdicts.flag(lo > np.minimum(o, c), "low_above_open_close", "low")
    for col, values in numbers.items():
        bars[col] = values

    valid = verdicts.valid
    dup = bars.loc[valid].duplicated(["symbol", "interval", "ts"], keep="first").to_numpy()
    duplicate = np.zeros(n, dtype=bool)
    duplicate[np.flatnonzero(valid)[dup]] = True
    verdicts.flag(duplicate, "duplicate_symbol_ts", "ts")

    valid = verdicts.valid
    accepted = bars.loc[valid, list(BAR_COLUMNS)].reset_index(drop=True)
    accepted["symbol"] = accepted["symbol"].astype(object)
    accepted["interval"] = accepted["interval"].astype(object)
    bad = np.flatnonzero(~valid)
    quarantined = pd.DataFrame(
        {
            "row_number": (bad + first_row_number).astype("uint64"),
            "reason": verdicts.reason[bad].astype(str),
            "field": verdicts.field[bad].astype(str),
            "raw": _as_json(raw.iloc[bad]),
        },
        columns=list(QUARANTINE_COLUMNS),
    )
    return ValidationResult(accepted=accepted, quarantined=quarantined)


def _column(raw: pd.DataFrame, name: str, missing: list[str]) -> pd.Series:
    """A column, or all-missing values when the input lacks it (each row then fails a rule)."""
    if name in missing:
        return pd.Series([None] * len(raw), index=raw.index, dtype=object)
    return raw[name]


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
    raw: pd.DataFrame, bars: pd.DataFrame, interval: str | None, verdicts: _Verdicts
) -> pd.Series:
    """The interval of each row: its own column, the given one, or one inferred from ``ts``."""
    if "interval" in raw.columns:
        values = raw["interval"].astype("string").str.strip()
        known = {v for v in values.dropna().unique() if INTERVAL_PATTERN.match(v)}
        ok = values.isin(known).fillna(False).to_numpy(bool)
        verdicts.flag(~ok, "invalid_interval", "interval")
        return values.astype(object)
    if interval is None:
        known = bars.loc[verdicts.valid]
        if known.empty:
            return pd.Series("", index=bars.index, dtype=object)
        top = known["symbol"].value_counts().index[0]
        interval = infer_interval(known.loc[known["symbol"] == top, "ts"])
    return pd.Series(interval, index=bars.index, dtype=object)


def _as_json(rows: pd.DataFrame) -> list[str]:
    """Each row's original values as a JSON object of strings."""
    if rows.empty:
        return []
    text = rows.astype(str)
    return [json.dumps(record) for record in text.to_dict("records")]
