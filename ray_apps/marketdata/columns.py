"""Mapping the columns of a bar file (CSV or Parquet) onto the bar schema.

Files come in the common OHLCV layouts: the platform's own (``symbol, ts, open, ...``) and
price downloads such as ``Date,Open,High,Low,Close,Adj Close,Volume``. Names match whatever
their case and surrounding spaces. ``Adj Close`` is dropped on purpose: it is the close
back-adjusted for later splits and dividends, which the traded open, high and low are not, so
mixing it in would break the OHLC rules; the bars keep the prices as traded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ray_apps.errors import UserError

#: Accepted names of each bar column, lower case.
ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker"),
    "interval": ("interval",),
    "ts": ("ts", "date", "datetime", "timestamp", "time"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume",),
}
#: Adjusted-close columns, dropped (see the module docstring).
ADJUSTED_CLOSE = ("adj close", "adj_close", "adjclose", "adjusted close", "adjusted_close")
NEEDED = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ColumnMapping:
    """How to turn a file's columns into bar columns."""

    rename: dict[str, str]
    drop: tuple[str, ...]
    symbol: str | None

    def apply(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The rows of one chunk with bar column names (unmapped columns kept as they are)."""
        frame = raw.drop(columns=list(self.drop)).rename(columns=self.rename)
        if self.symbol is not None:
            frame.insert(0, "symbol", self.symbol)
        return frame


def map_columns(columns: Sequence[str], symbol: str | None, where: str) -> ColumnMapping:
    """The mapping of a file's header onto the bar columns.

    Columns that match no bar column are kept under their own name (validation then
    quarantines the rows as ``unknown_column``).

    Args:
        columns: the file's column names.
        symbol: the symbol of every row of a file without a symbol column (``--symbol``).
        where: the file, for messages.

    Raises:
        UserError: a needed column is missing, two columns name the same bar column, the file
            has no symbol column and no ``symbol`` was given, or it has one and one was given.
    """
    lookup = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
    rename: dict[str, str] = {}
    drop = []
    for column in columns:
        key = str(column).strip().lower()
        if key in ADJUSTED_CLOSE:
            drop.append(column)
        elif key in lookup:
            target = lookup[key]
            clash = [c for c, t in rename.items() if t == target]
            if clash:
                raise UserError(
                    f"{where}: columns {clash[0]!r} and {column!r} both map to {target!r}; "
                    "keep one of them"
                )
            rename[column] = target
    found = set(rename.values())
    missing = [name for name in NEEDED if name not in found]
    if missing:
        raise UserError(
            f"{where}: cannot map columns {', '.join(map(str, columns)) or '(none)'} to bars: "
            f"need {_needed()} (any case); missing {', '.join(missing)}"
        )
    if "symbol" in found and symbol is not None:
        raise UserError(
            f"{where} has a symbol column: drop --symbol (--symbols keeps only some symbols)"
        )
    if "symbol" not in found and symbol is None:
        raise UserError(
            f"{where} has no symbol column: pass --symbol SYMBOL to name the one symbol it holds"
        )
    return ColumnMapping(rename=rename, drop=tuple(drop), symbol=symbol)


def _needed() -> str:
    """The needed columns with their accepted names, e.g. ``ts (ts/date/...)``."""
    parts = [
        f"{name} ({'/'.join(ALIASES[name])})" if len(ALIASES[name]) > 1 else name
        for name in ("symbol", *NEEDED)
    ]
    return ", ".join(parts) + "; symbol may come from --symbol instead"
