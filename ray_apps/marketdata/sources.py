"""Ingest sources named on the command line: packaged data sets, files, synthetic specs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ray_apps.errors import UserError
from ray_apps.marketdata import loaders
from ray_apps.marketdata.synthetic import SyntheticSpec

PACKAGED: dict[str, Callable[[], pd.DataFrame]] = {
    "arch:sp500": lambda: loaders.load_arch("sp500"),
    "arch:nasdaq": lambda: loaders.load_arch("nasdaq"),
    "sp500-panel": loaders.load_sp500_panel,
    "btc-15m": loaders.load_btc_15m,
}
SOURCE_FORMS = (
    "arch:sp500, arch:nasdaq, sp500-panel, btc-15m, synthetic:SYMBOLS:BARS[:INTERVAL], "
    "or a .csv/.parquet path"
)


@dataclass(frozen=True)
class TableSource:
    """Rows read from a packaged data set or a file, validated in the driver."""

    name: str
    read: Callable[[], Iterator[pd.DataFrame]]


@dataclass(frozen=True)
class SyntheticSource:
    """Bars generated in parallel Ray tasks."""

    name: str
    spec: SyntheticSpec


Source = TableSource | SyntheticSource


def parse_source(
    text: str,
    seed: int = 7,
    correlation: float = 0.3,
    symbol: str | None = None,
    chunk_rows: int = loaders.CSV_CHUNK_ROWS,
) -> Source:
    """The source a ``--source`` argument names.

    Args:
        text: the argument.
        seed: synthetic sources: random seed.
        correlation: synthetic sources: pairwise return correlation.
        symbol: files without a symbol column: the symbol of every row.
        chunk_rows: table sources: rows read and validated at a time.

    Raises:
        UserError: the text is none of ``SOURCE_FORMS``, a synthetic spec is malformed, or
            ``symbol`` is given for a source other than a file.
    """
    path = Path(text)
    is_file = text not in PACKAGED and not text.startswith("synthetic:")
    if symbol is not None and not is_file:
        raise UserError(f"--symbol is for CSV/Parquet files without a symbol column, not {text}")
    if text in PACKAGED:
        load = PACKAGED[text]
        return TableSource(name=text, read=lambda: _chunks(load(), chunk_rows))
    if text.startswith("synthetic:"):
        return SyntheticSource(name=text, spec=_synthetic_spec(text, seed, correlation))
    if path.suffix.lower() in (".csv", ".parquet", ".pq") or path.exists():
        return TableSource(name=str(path), read=lambda: loaders.read_file(path, symbol, chunk_rows))
    raise UserError(f"unknown source {text!r}: use {SOURCE_FORMS}")


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """A loaded frame in slices of ``rows``, so validating one overlaps storing the last."""
    for first in range(0, max(len(frame), 1), rows):
        yield frame.iloc[first : first + rows]


def _synthetic_spec(text: str, seed: int, correlation: float) -> SyntheticSpec:
    parts = text.split(":")[1:]
    usage = "synthetic:SYMBOLS:BARS[:INTERVAL], e.g. synthetic:500:20000 or synthetic:10:5000:15m"
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts[:2]):
        raise UserError(f"bad source {text!r}: use {usage}")
    interval = parts[2] if len(parts) == 3 else "1d"
    try:
        return SyntheticSpec(
            n_symbols=int(parts[0]),
            n_bars=int(parts[1]),
            interval=interval,
            seed=seed,
            correlation=correlation,
        )
    except ValueError as exc:
        raise UserError(f"bad source {text!r}: {exc}") from exc
