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
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ray_apps.errors import UserError
from ray_apps.features.batch import CHECKED_COLUMNS, INPUT_COLUMNS, normalize_bars
from ray_apps.marketdata.schema import INTERVAL_PATTERN, infer_interval
from ray_apps.stores.offline_actor import OfflineStoreHandle

STORE_INTERVAL = "1d"
"""The interval read from the store when none is given."""


class BarsInput(BaseModel):
    """The bars a feature run reads.

    Attributes:
        path: a CSV or Parquet file (or Parquet folder) with symbol, ts, high, low, close,
            volume; None reads the offline store.
        symbols: only these symbols (all when None).
        interval: the bar interval: read from the store (default 1d); for a file, the
            interval its bars are stored under (default: the file's ``interval`` column, or
            the spacing of its timestamps; see :func:`resolve_interval`).
        start: first bar time read from the store (inclusive); features warm up from here.
        end: end of the bars read from the store (exclusive).
    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    symbols: list[str] | None = None
    interval: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # the engines' tasks run in other working folders: they need the file's whole path
        return None if path is None else path.expanduser().absolute()

    @field_validator("interval")
    @classmethod
    def _known_interval(cls, interval: str | None) -> str | None:
        if interval is not None and not INTERVAL_PATTERN.match(interval):
            raise ValueError(f"{interval!r} is not a count and a unit (s, m, h, d, w), e.g. 15m")
        return interval

    @model_validator(mode="after")
    def _store_default(self) -> BarsInput:
        if self.path is None and self.interval is None:
            self.interval = STORE_INTERVAL
        return self

    @property
    def label(self) -> str:
        """Where the bars come from, for messages."""
        return str(self.path) if self.path is not None else f"store ({self.interval} bars)"


def symbol_counts(source: BarsInput, store: OfflineStoreHandle | None = None) -> dict[str, int]:
    """Rows per symbol of the input (``store`` is the offline-store actor for store input)."""
    if source.path is None:
        listing = ray.get(store.symbols.remote())
        listing = listing.filter(pc.field("interval") == source.interval)
        counts = dict(zip(listing["symbol"].to_pylist(), listing["bars"].to_pylist(), strict=True))
    else:
        table = _file_dataset(source.path).to_table(columns=["symbol"])
        counts_array = pc.value_counts(table.column("symbol"))
        counts = {str(item["values"]): int(item["counts"]) for item in counts_array.to_pylist()}
    if source.symbols:
        missing = sorted(set(source.symbols) - set(counts))
        if missing:
            raise UserError(f"{source.label}: no bars for symbol(s) {missing[:10]}")
        counts = {s: counts[s] for s in source.symbols}
    if not counts:
        raise UserError(f"{source.label}: no bars to compute features from")
    return counts


def resolve_interval(source: BarsInput, counts: dict[str, int]) -> str:
    """The one bar interval of the input.

    The store input's is the asked one. A file's is its ``interval`` column, else the one
    given, else the most common spacing of the timestamps of its largest symbol.

    Args:
        source: where the bars are.
        counts: rows per symbol of the input (from :func:`symbol_counts`).

    Raises:
        UserError: the file holds several intervals, or not the one given, or too few bars to
            tell.
    """
    if source.path is None:
        return str(source.interval)
    dataset = _file_dataset(source.path)
    symbols = pc.field("symbol").isin(sorted(counts))
    if "interval" in dataset.schema.names:
        column = dataset.to_table(columns=["interval"], filter=symbols).column("interval")
        found = sorted(str(v) for v in pc.unique(column).to_pylist())
        if len(found) > 1:
            raise UserError(
                f"{source.path}: holds bars of several intervals {found[:5]}; compute one "
                "interval at a time (split the file by its interval column)"
            )
        if source.interval is not None and found != [source.interval]:
            raise UserError(f"--interval {source.interval}: {source.path} holds {found} bars")
        return found[0]
    if source.interval is not None:
        return source.interval
    largest = max(counts, key=counts.__getitem__)
    times = dataset.to_table(columns=["symbol", "ts"], filter=pc.field("symbol") == largest)
    ts = normalize_bars(times, coerce=True).column("ts").to_pandas().dropna()
    try:
        return infer_interval(ts)
    except UserError as error:
        raise UserError(f"{source.path}: {error}") from None


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
        return bars.select([*INPUT_COLUMNS, *CHECKED_COLUMNS])
    dataset = _file_dataset(source.path)
    columns = [c for c in (*INPUT_COLUMNS, *CHECKED_COLUMNS) if c in dataset.schema.names]
    return dataset.to_table(columns=columns, filter=pc.field("symbol").isin(symbols))


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
                    column_types={"symbol": pa.string(), "ts": pa.string(), "interval": pa.string()}
                )
            ),
        )
    else:
        dataset = pads.dataset(str(path), format="parquet")
    missing = [c for c in INPUT_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (found "
            f"{', '.join(dataset.schema.names)}; need {', '.join(INPUT_COLUMNS)}, by these "
            "names); other layouts, such as a Date,Open,High,Low,Close,Adj Close,Volume price "
            "download, go in through `ray-apps ingest --source FILE [--symbol S]`, then "
            "`features compute --from-store`"
        )
    return dataset
