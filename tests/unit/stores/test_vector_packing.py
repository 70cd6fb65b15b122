import struct

import numpy as np
import pyarrow as pa
import pytest

from ray_apps.errors import UserError
from ray_apps.stores.vector_packing import iso_times, pack_batch, unpack_records

# 2024-01-02T00:00:00Z is 1,704,153,600 s after the epoch (19,724 days x 86,400 s).
DAY_2_US = 1_704_153_600_000_000
HOUR_US = 3_600_000_000


def record(micros: int, *values: float) -> bytes:
    return struct.pack(">q", micros) + b"".join(struct.pack("<d", v) for v in values)


def times(*micros: int) -> pa.Array:
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def test_records_are_big_endian_time_then_little_endian_float64s_grouped_by_symbol():
    table = pa.table(
        {
            "symbol": ["B", "A", "A"],
            "ts": times(DAY_2_US, DAY_2_US + HOUR_US, DAY_2_US),
            "f": [1.5, None, -2.0],
            "g": pa.array([7, 8, 9], pa.int32()),
        }
    )
    batch = pack_batch(table)
    assert batch.columns == ["f", "g"]
    assert batch.symbols == ["A", "B"]
    assert batch.ends == [2, 3]
    assert batch.record_size == 24
    nan = record(DAY_2_US + HOUR_US, float("nan"), 8.0)
    assert batch.records[:24] == record(DAY_2_US, -2.0, 9.0)
    assert batch.records[24:48][:8] == nan[:8] and np.isnan(struct.unpack("<d", nan[8:16])[0])
    assert batch.records[24:48][16:] == struct.pack("<d", 8.0)
    assert batch.records[48:] == record(DAY_2_US, 1.5, 7.0)
    assert batch.micros == [DAY_2_US, DAY_2_US + HOUR_US, DAY_2_US]
    assert batch.newest == ["2024-01-02T01:00:00.000000Z", "2024-01-02T00:00:00.000000Z"]


def test_unpacking_hand_made_records():
    records = [record(DAY_2_US, 0.1, -3.0), record(DAY_2_US + 1, 1e300, 0.0)]
    table = unpack_records(records, ["a", "b"])
    assert table.column_names == ["ts", "a", "b"]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [DAY_2_US, DAY_2_US + 1]
    assert table.column("a").to_pylist() == [0.1, 1e300]
    assert table.column("b").to_pylist() == [-3.0, 0.0]
    with pytest.raises(UserError, match="written with other columns"):
        unpack_records([record(DAY_2_US, 0.1)], ["a", "b"])


def test_other_time_zones_and_units_pack_as_utc_microseconds():
    ts = pa.array([DAY_2_US // 1000], pa.int64()).cast(pa.timestamp("ms", tz="America/New_York"))
    batch = pack_batch(pa.table({"symbol": ["X"], "ts": ts, "f": [1.0]}))
    assert batch.micros == [DAY_2_US]
    assert batch.newest == ["2024-01-02T00:00:00.000000Z"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"ts": times(DAY_2_US), "f": [1.0]}), "lack column 'symbol'"),
        (pa.table({"symbol": ["X"], "ts": [1], "f": [1.0]}), "ts must be a timestamp"),
        (pa.table({"symbol": [None], "ts": times(DAY_2_US)}), "'symbol' has nulls"),
        (pa.table({"symbol": ["X"], "ts": times(DAY_2_US), "f": ["a"]}), "'f' must be numeric"),
        (pa.table({"symbol": ["X"], "ts": times(DAY_2_US), "a,b": [1.0]}), "must not hold a comma"),
    ],
)
def test_bad_tables_are_one_line_errors(table, message):
    with pytest.raises(UserError, match=message):
        pack_batch(table)


def test_times_outside_four_digit_years_are_refused():
    with pytest.raises(UserError, match="out of range"):
        iso_times(times(-70_000_000_000_000_000))
