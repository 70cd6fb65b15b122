"""Where the bars for a feature run come from: the offline store or a CSV/Parquet file.

Features depend on each symbol's whole history, so every reader here hands out *whole
symbols*: :meth:`BarsInput.partitions` splits the symbols into groups of similar row counts
and :meth:`BarsInput.read` returns one group's bars, each symbol's rows together in time order.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import ray
from pydantic import BaseModel, ConfigDict, Field

from ray_apps.errors import UserError
from ray_apps.features.batch import INPUT_COLUMNS
from ray_apps.stores.offline_actor import OfflineStoreHandle


class BarsInput(BaseModel):
    """The bars a feature run reads.

    Attributes:
        path: a CSV or Parquet file (or Parquet folder) with symbol, ts, high, low, close,
            volume; None reads the offline store.
        symbols: only these symbols (all when None).
        interval: the bar interval to read from the store (files carry one interval).
        start: first bar time read from the store (inclusive); features warm up from here.
        end: end of the bars read from the store (exclusive).
    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    symbols: list[str] | None = None
    interval: str = Field("1d", description="Bar interval read from the store.")
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def label(self) -> str:
        """Where the bars come from, for messages."""
        return str(self.path) if self.path is not None else f"store ({self.interval} bars)"


def symbol_counts(
    source: BarsInput, store: OfflineStoreHandle | None = None
) -> dict[str, int]:
    """Rows per symbol of the input (``store`` is the offline-store actor for store input)."""
    if source.path is None:
        listing = ray.get(store.symbols.remote())
        listing = listing.filter(pc.field("interval") == source.interval)
        counts = dict(
            zip(listing["symbol"].to_pylist(), listing["bars"].to_pylist(), strict=True)
        )
    else:
        table = _file_dataset(source.path).to_table(columns=["symbol"])
        counts_array = pc.value_counts(table.column("symbol"))
        counts = {
            str(item["values"]): int(item["counts"]) for item in counts_array.to_pylist()
        }
    if source.symbols:
        missing = sorted(set(source.symbols) - set(counts))
        if missing:
            raise UserError(f"{source.label}: no bars for symbol(s) {missing[:10]}")
        counts = {s: counts[s] for s in source.symbols}
    if not counts:
        raise UserError(f"{source.label}: no bars to compute features from")
    return counts


def partition(counts: dict[str, int], parts: int, max_rows: int) -> list[list[str]]:
    """Splits the symbols into runs of consecutive symbols (in sorted order) of similar size.

    Consecutive symbols keep each group's rows together in a file or table sorted by symbol,
    so a filtered read of one group skips the rest (Parquet row-group statistics, the store's
    primary key).

    Args:
        counts: rows per symbol.
        parts: groups wanted (more when needed to respect ``max_rows``, fewer when there are
            fewer symbols).
        max_rows: rows a group should not pass by more than half a symbol (a single larger
            symbol is its own group).

    Returns:
        Non-empty groups of sorted symbols, in symbol order.
    """
    total = sum(counts.values())
    parts = min(max(parts, -(-total // max(max_rows, 1)), 1), max(len(counts), 1))
    target = total / parts
    groups: list[list[str]] = []
    done = 0  # rows in the groups before the current one
    rows = 0  # rows in the current group
    for symbol in sorted(counts):
        size = counts[symbol]
        # close the group when this symbol's midpoint passes the group's share
        if groups and rows and done + rows + size / 2 > target * len(groups):
            done += rows
            rows = 0
            groups.append([])
        if not groups:
            groups.append([])
        groups[-1].append(symbol)
        rows += size
    return groups


def read_group(
    source: BarsInput, symbols: list[str], store: OfflineStoreHandle | None = None
) -> pa.Table:
    """The bars of ``symbols``, as an Arrow table with the input columns."""
    if source.path is None:
        bars = ray.get(
            store.bars.remote(
                symbols=symbols, start=source.start, end=source.end, interval=source.interval
            )
        )
        return bars.select(list(INPUT_COLUMNS))
    return _file_dataset(source.path).to_table(
        columns=list(INPUT_COLUMNS), filter=pc.field("symbol").isin(symbols)
    )


def read_all(source: BarsInput, store: OfflineStoreHandle | None = None) -> pa.Table:
    """Every bar of the input in one table (the single-process and incremental paths)."""
    symbols = sorted(symbol_counts(source, store))
    return read_group(source, symbols, store)


def _file_dataset(path: Path) -> pads.Dataset:
    if not path.exists():
        raise UserError(f"{path}: input file not found")
    if path.suffix.lower() == ".csv":
        dataset = pads.dataset(
            str(path),
            format=pads.CsvFileFormat(
                convert_options=pacsv.ConvertOptions(
                    column_types={"symbol": pa.string(), "ts": pa.string()}
                )
            ),
        )
    else:
        dataset = pads.dataset(str(path), format="parquet")
    missing = [c for c in INPUT_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; need {list(INPUT_COLUMNS)}")
    return dataset
