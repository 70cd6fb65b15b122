"""Reading the universe's cross-section from the online store, against the project's Redis
(alone, not the stack): the store's listing and multi-window read, the as_of rule, staleness
and the per-symbol problems."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.serving.cross_section import read_cross_section, read_universe
from ray_apps.stores.online import OnlineStore, redis_client

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")


def new_store(settings: Settings, prefix_extra: str = "") -> OnlineStore:
    tag = uuid.uuid4().hex[:8]
    return OnlineStore(
        redis_client(settings), prefix=f"test:{tag}{prefix_extra}:", events_key=f"test:{tag}:events"
    )


@pytest.fixture
def store(redis_settings) -> OnlineStore:
    return new_store(redis_settings)


def day(d: int) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=d)


def vectors(rows: list[tuple[str, int]], **columns: list[float]) -> pa.Table:
    ts = pa.array([day(d) for _, d in rows], pa.timestamp("us", tz="UTC"))
    return pa.table({"symbol": [s for s, _ in rows], "ts": ts, **columns})


def history(symbols_days: dict[str, range]) -> pa.Table:
    """Vectors with f = 10 * symbol index + day and g = -day, for each symbol's days."""
    rows = [(s, d) for s, days in symbols_days.items() for d in days]
    index = {s: i for i, s in enumerate(symbols_days)}
    return vectors(rows, f=[10.0 * index[s] + d for s, d in rows], g=[-float(d) for _, d in rows])


def test_symbols_lists_the_latest_hashes_of_this_prefix_only(redis_settings):
    store = new_store(redis_settings, "[x]*")  # glob characters in the prefix are literal
    other = new_store(redis_settings)
    store.write_batch(vectors([("A", 1), ("B:C", 1)], f=[1.0, 2.0]), "v1", window=3)
    store.write(vectors([("D", 1)], f=[3.0]), "v1")
    other.write_batch(vectors([("Z", 1)], f=[1.0]), "v1", window=3)
    assert store.symbols() == ["A", "B:C", "D"]
    assert other.symbols() == ["Z"]


def test_read_windows_of_many_symbols_up_to_a_time(store):
    store.write_batch(history({"A": range(0, 10), "B": range(3, 8)}), "v1", window=20)
    store.write_batch(vectors([("C", 2)], h=[7.0]), "v2", window=20)  # another layout
    table = store.read_windows(["B", "MISSING", "A", "C"], n=3, until=day(6).to_pydatetime())
    assert table.column_names == ["symbol", "ts", "spec_version", "f", "g", "h"]
    got = list(
        zip(
            table.column("symbol").to_pylist(),
            [(t - DAY0.to_pydatetime()).days for t in table.column("ts").to_pylist()],
            strict=True,
        )
    )
    assert got == [("B", 4), ("B", 5), ("B", 6), ("A", 4), ("A", 5), ("A", 6), ("C", 2)]
    assert table.column("f").to_pylist() == [14.0, 15.0, 16.0, 4.0, 5.0, 6.0, None]
    assert table.column("h").to_pylist() == [None] * 6 + [7.0]
    assert table.column("spec_version").to_pylist() == ["v1"] * 6 + ["v2"]
    everything = store.read_windows(["A"], n=100)
    assert everything.num_rows == 10 and everything.column("f").to_pylist()[-1] == 9.0
    with pytest.raises(UserError, match="n must be 1 or more"):
        store.read_windows(["A"], n=0)


def test_as_of_is_the_oldest_latest_vector_of_the_fresh_symbols(store):
    # A and B reached day 9, C only day 8: the complete as_of is day 8, and A and B are scored
    # there from their windows.
    store.write_batch(
        history({"A": range(0, 10), "B": range(0, 10), "C": range(0, 9)}), "v1", window=20
    )
    section = read_cross_section(store, "v1", lookback=3, feature_columns=["f"])
    universe = section.universe
    assert universe.as_of == day(8) and universe.newest == day(9)
    assert universe.fresh == ["A", "B", "C"] and universe.problems == {}
    rows = section.rows
    assert list(rows.columns) == ["symbol", "ts", "f"]
    assert rows["ts"].tolist() == [day(d) for d in (6, 6, 6, 7, 7, 7, 8, 8, 8)]
    assert rows["symbol"].tolist() == ["A", "B", "C"] * 3
    assert rows["f"].tolist() == [6.0, 16.0, 26.0, 7.0, 17.0, 27.0, 8.0, 18.0, 28.0]


def test_a_stale_symbol_is_reported_and_its_older_rows_stay_in_the_cross_section(store):
    store.write_batch(
        history({"A": range(0, 10), "B": range(0, 10), "S": range(0, 8)}), "v1", window=20
    )
    store.write_batch(history({"X": range(0, 10)}), "v0", window=20)
    universe = read_universe(
        store, "v1", max_age=timedelta(days=1), symbols=["A", "B", "S", "X", "NOPE"]
    )
    assert universe.as_of == day(9)
    assert universe.fresh == ["A", "B"] and universe.members == ["A", "B", "S"]
    assert {s: p.code for s, p in universe.problems.items()} == {
        "S": "stale_features",
        "X": "spec_version",
        "NOPE": "unknown_symbol",
    }
    assert "2024-01-08" in universe.problems["S"].detail
    assert "1 day" in universe.problems["S"].detail
    assert "'v0'" in universe.problems["X"].detail
    # Without a maximum age S is fresh and holds as_of back to its day 7.
    assert read_universe(store, "v1", symbols=["A", "B", "S"]).as_of == day(7)
    section = read_cross_section(
        store,
        "v1",
        lookback=3,
        feature_columns=["f"],
        max_age=timedelta(days=1),
        symbols=["A", "B", "S"],
    )
    rows = section.rows
    assert rows.loc[rows["symbol"] == "S", "ts"].tolist() == [day(7)]
    assert rows["ts"].drop_duplicates().tolist() == [day(7), day(8), day(9)]


def test_latest_vectors_without_windows_make_the_rows_of_one_date(store):
    store.write(vectors([("A", 3), ("B", 3)], f=[1.0, 2.0]), "v1")  # as materialize writes
    section = read_cross_section(store, "v1", lookback=1, feature_columns=["f"])
    assert section.universe.as_of == day(3)
    assert section.rows.to_dict("list") == {
        "symbol": ["A", "B"],
        "ts": [day(3)] * 2,
        "f": [1.0, 2.0],
    }


def test_missing_spec_version_or_column_is_one_clear_error(store):
    store.write_batch(history({"A": range(0, 3)}), "v1", window=5)
    with pytest.raises(UserError, match="no symbol has features of spec version 'v9'"):
        read_universe(store, "v9")
    with pytest.raises(UserError, match=r"lack the model's column\(s\) \['nope'\]"):
        read_cross_section(store, "v1", lookback=2, feature_columns=["f", "nope"])


@pytest.mark.parametrize("pipeline_size", [1000, 200])
def test_five_hundred_symbols_in_two_round_trips(redis_settings, monkeypatch, pipeline_size):
    store = new_store(redis_settings)
    store.pipeline_size = pipeline_size
    symbols = [f"S{i:03d}" for i in range(500)]
    store.write_batch(history(dict.fromkeys(symbols, range(0, 12))), "v1", window=20)
    store.client.script_flush()  # a restarted server has lost the read scripts
    rounds = []
    pipeline = store.client.pipeline

    def counted_pipeline(*args, **kwargs):  # this store's round trips, not other threads'
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*a, **k):
            rounds.append(len(pipe.command_stack))
            return execute(*a, **k)

        pipe.execute = counted
        return pipe

    monkeypatch.setattr(store.client, "pipeline", counted_pipeline)
    section = read_cross_section(
        store, "v1", lookback=10, feature_columns=["f", "g"], symbols=symbols
    )
    calls = -(-500 // pipeline_size)  # one script call per pipeline_size symbols
    assert rounds == [calls] * 4  # each read script missing once: tried, loaded, run again
    rounds.clear()
    read_cross_section(store, "v1", lookback=10, feature_columns=["f", "g"], symbols=symbols)
    assert rounds == [calls, calls]  # latest times, then layouts and windows
    assert section.rows.shape == (5000, 4)
    expected = np.array([10.0 * i + d for d in range(2, 12) for i in range(500)])
    np.testing.assert_array_equal(section.rows["f"].to_numpy(), expected)
    np.testing.assert_array_equal(section.rows["g"].to_numpy(), -np.repeat(range(2, 12), 500))
