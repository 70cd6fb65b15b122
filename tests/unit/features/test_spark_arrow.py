"""The Spark engine's Arrow path without Spark: whole symbols out of arbitrary Arrow batches."""

import numpy as np
import pyarrow as pa
import pytest

from ray_apps.features.batch import compute_checked
from ray_apps.features.engines.spark import arrow_features, whole_symbol_tables
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def sorted_bars(n_symbols=5, n_bars=400) -> pa.Table:
    bars = generate_bars(SyntheticSpec(n_symbols=n_symbols, n_bars=n_bars, interval="15m"))
    table = pa.Table.from_pandas(bars.drop(columns="interval"), preserve_index=False)
    return table.sort_by([("symbol", "ascending"), ("ts", "ascending")])


def batches_of(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    """Batches of ``size`` rows, cut wherever that falls (as Spark's Arrow batches are)."""
    return table.to_batches(max_chunksize=size)


@pytest.mark.parametrize(("size", "min_rows"), [(7, 1), (130, 500), (333, 1000), (2000, 10)])
def test_each_symbol_lands_in_exactly_one_table_in_order(size, min_rows):
    table = sorted_bars()
    tables = list(whole_symbol_tables(batches_of(table, size), min_rows=min_rows))
    seen = [set(t.column("symbol").to_pylist()) for t in tables]
    assert sum(len(s) for s in seen) == 5  # no symbol split between two tables
    # gathered to min_rows, then cut back to the start of the last symbol (400 rows each)
    assert all(t.num_rows >= min_rows - 400 for t in tables[:-1])
    assert pa.concat_tables(tables).equals(table)


def test_empty_batches_and_no_batches_give_nothing_extra():
    table = sorted_bars(n_symbols=2, n_bars=50)
    empty = table.slice(0, 0).to_batches()
    assert list(whole_symbol_tables([])) == []
    tables = list(whole_symbol_tables([*empty, *batches_of(table, 30), *empty], min_rows=1))
    assert pa.concat_tables(tables).equals(table)


def test_the_arrow_function_gives_the_numbers_of_the_whole_table():
    table = sorted_bars()
    got = pa.Table.from_batches(list(arrow_features(SPEC)(batches_of(table, 999))))
    expected = compute_checked(table, SPEC)[0]
    assert got.schema.equals(expected.schema)
    assert got.column("symbol").equals(expected.column("symbol"))
    for column in SPEC.columns:
        assert np.array_equal(
            got.column(column).to_numpy(), expected.column(column).to_numpy(), equal_nan=True
        ), column
