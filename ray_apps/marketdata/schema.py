"""The bar schema every loader produces and the offline store keeps."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa

from ray_apps.errors import UserError

#: Columns of a bar, in store order. ``ts`` is the bar's open time in UTC.
BAR_COLUMNS = ("symbol", "interval", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")

BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        *((name, pa.float64()) for name in (*PRICE_COLUMNS, "volume")),
    ]
)

#: The bars as Arrow tables carry them between processes: text as dictionaries (a few
#: distinct values per block), so a block serializes as a handful of flat buffers.
BAR_TABLE_SCHEMA = pa.schema(
    [
        ("symbol", pa.dictionary(pa.int32(), pa.string())),
        ("interval", pa.dictionary(pa.int32(), pa.string())),
        *((f.name, f.type) for f in BAR_SCHEMA if f.name not in ("symbol", "interval")),
    ]
)

INTERVAL_PATTERN = re.compile(r"^([1-9][0-9]*)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_interval(interval: str) -> pd.Timedelta:
    """Length of a bar interval such as ``1d``, ``15m``, ``1h``, ``30s``.

    Raises:
        UserError: the text is not a positive count followed by s, m, h, d or w.
    """
    match = INTERVAL_PATTERN.match(interval)
    if match is None:
        raise UserError(
            f"interval {interval!r} is not valid: use a count and a unit (s, m, h, d, w), e.g. 15m"
        )
    return pd.Timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def format_interval(length: pd.Timedelta) -> str:
    """The shortest interval name for a length, e.g. 900 s -> ``15m``."""
    seconds = int(length.total_seconds())
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNIT_SECONDS[unit] and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    raise UserError(f"cannot name an interval of {length}")


def infer_interval(ts: pd.Series) -> str:
    """The bar interval of timestamps: their most common spacing within a symbol."""
    steps = ts.sort_values().diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        raise UserError(
            "cannot infer the bar interval from fewer than two timestamps; pass --interval"
        )
    step = steps.mode().iloc[0]
    if pd.Timedelta(days=1) <= step <= pd.Timedelta(days=4):
        return "1d"  # weekends and holidays stretch daily bars
    return format_interval(step)


def bars_table(bars: pa.Table | pd.DataFrame) -> pa.Table:
    """Bars (``BAR_COLUMNS`` or more) as an Arrow table in ``BAR_TABLE_SCHEMA``."""
    if isinstance(bars, pd.DataFrame):
        bars = pa.Table.from_pandas(bars[list(BAR_COLUMNS)], preserve_index=False)
    return bars.select(list(BAR_COLUMNS)).cast(BAR_TABLE_SCHEMA)


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the store's dtypes."""
    return BAR_SCHEMA.empty_table().to_pandas()
