"""Feature vectors packed as bytes for the online store's windows, and unpacked again.

One packed vector (a *record*) is the bar time as a big-endian signed 64-bit count of
microseconds since 1970-01-01 UTC (8 bytes, so records of one symbol sort by time as bytes),
followed by each feature value as a little-endian IEEE-754 float64 (8 bytes each, in column
order; a missing value is NaN). A record of 22 features is 184 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_apps.errors import UserError

TS_BYTES = 8
VALUE_BYTES = 8
#: ISO-8601 UTC text with microseconds (``2024-01-02T15:30:00.000000Z``): text order is time order.
ISO_LENGTH = 27
UTC_MICROS = pa.timestamp("us", tz="UTC")


def record_dtype(width: int) -> np.dtype:
    """The numpy layout of one record of ``width`` feature values."""
    return np.dtype([("ts", ">i8"), ("values", "<f8", (width,))])


@dataclass(frozen=True)
class PackedBatch:
    """A table of vectors grouped by symbol, each symbol's records contiguous in time order.

    Attributes:
        columns: the feature columns, in record order.
        symbols: each symbol once, in the order of its records.
        ends: for each symbol, the index one past its last record.
        records: every record, concatenated.
        micros: each record's time in microseconds since the epoch (UTC).
        newest: for each symbol, the ISO-8601 UTC time of its newest record.
    """

    columns: list[str]
    symbols: list[str]
    ends: list[int]
    records: bytes
    micros: list[int]
    newest: list[str]

    @property
    def record_size(self) -> int:
        """Bytes per record."""
        return TS_BYTES + VALUE_BYTES * len(self.columns)


def pack_batch(features: pa.Table) -> PackedBatch:
    """Packs ``symbol, ts`` and float feature columns, sorted by symbol then time.

    Raises:
        UserError: a key column is missing or null, ``ts`` is not a timestamp, a feature column
            is not numeric or its name has a comma, or a time is outside years 1000-9999.
    """
    for key in ("symbol", "ts"):
        if key not in features.column_names:
            raise UserError(f"feature vectors lack column {key!r}")
        if features.column(key).null_count:
            raise UserError(f"feature vectors: column {key!r} has nulls")
    ts_type = features.schema.field("ts").type
    if not pa.types.is_timestamp(ts_type):
        raise UserError(f"feature vectors: ts must be a timestamp, not {ts_type}")
    columns = [c for c in features.column_names if c not in ("symbol", "ts")]
    for name in columns:
        kind = features.schema.field(name).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise UserError(f"feature vectors: column {name!r} must be numeric, not {kind}")
        if "," in name:
            raise UserError(f"feature vectors: column name {name!r} must not hold a comma")
    table = features.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    ts = pc.cast(table.column("ts"), UTC_MICROS).combine_chunks()
    records = np.empty(table.num_rows, dtype=record_dtype(len(columns)))
    micros = ts.cast(pa.int64()).to_numpy()
    records["ts"] = micros
    for index, name in enumerate(columns):
        column = pc.fill_null(table.column(name).cast(pa.float64()), np.nan)
        records["values"][:, index] = column.to_numpy()
    runs = pc.run_end_encode(table.column("symbol").cast(pa.string()).combine_chunks())
    ends = runs.run_ends.to_numpy().astype(np.int64)
    return PackedBatch(
        columns=columns,
        symbols=runs.values.to_pylist(),
        ends=ends.tolist(),
        records=records.tobytes(),
        micros=micros.tolist(),
        newest=iso_times(ts.take(pa.array(ends - 1))) if len(ends) else [],
    )


def iso_times(ts: pa.Array) -> list[str]:
    """Fixed-width ISO-8601 UTC text of each time (``2024-01-02T15:30:00.000000Z``).

    Raises:
        UserError: a time is outside years 1000-9999 (its text would not sort as time does).
    """
    text = pc.strftime(pc.cast(ts, UTC_MICROS), format="%Y-%m-%dT%H:%M:%SZ")
    lengths = pc.utf8_length(text)
    if len(text) and pc.any(pc.not_equal(lengths, ISO_LENGTH)).as_py():
        bad = text.filter(pc.not_equal(lengths, ISO_LENGTH))[0]
        raise UserError(f"online store: time {bad} is out of range (years 1000-9999)")
    return text.to_pylist()


def unpack_records(records: list[bytes], columns: list[str]) -> pa.Table:
    """``ts`` and the feature columns of packed records, in the order given.

    Raises:
        UserError: a record's size does not match ``columns`` (written by another layout).
    """
    layout = record_dtype(len(columns))
    if any(len(record) != layout.itemsize for record in records):
        raise UserError(
            f"online store: a window record is not {layout.itemsize} bytes "
            f"({len(columns)} features); it was written with other columns"
        )
    unpacked = np.frombuffer(b"".join(records), dtype=layout)
    arrays = [pa.array(unpacked["ts"].astype(np.int64)).cast(UTC_MICROS)]
    arrays += [pa.array(unpacked["values"][:, i].copy()) for i in range(len(columns))]
    return pa.Table.from_arrays(arrays, names=["ts", *columns])
