"""The online store's streaming write path against the project's Redis (alone, not the stack)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis

from ray_apps.errors import UserError
from ray_apps.stores.checkpoints import CheckpointStore, checkpoint_store
from ray_apps.stores.online import OnlineStore, redis_client

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture
def store(redis_settings) -> OnlineStore:
    tag = uuid.uuid4().hex[:8]
    return OnlineStore(
        redis_client(redis_settings), prefix=f"test:{tag}:", events_key=f"test:{tag}:events"
    )


def bars(symbols: list[str], days: list[int], **columns: list[float]) -> pa.Table:
    ts = pa.array([DAY0 + pd.Timedelta(days=d) for d in days], pa.timestamp("us", tz="UTC"))
    return pa.table({"symbol": symbols, "ts": ts, **columns})


def days_of(table: pa.Table) -> list[int]:
    return [(t - DAY0.to_pydatetime()).days for t in table.column("ts").to_pylist()]


def test_the_same_batch_twice_is_written_then_stale_and_leaves_the_same_window(store):
    batch = bars(["A", "B", "A"], [1, 1, 2], f=[1.0, 2.0, 3.0])
    first = store.write_batch(batch, "v1", window=5)
    window = store.read_window("A")
    again = store.write_batch(batch, "v1", window=5)
    assert (first.written, first.stale, first.symbols, first.latest) == (3, 0, 2, 2)
    assert (again.written, again.stale, again.symbols, again.latest) == (0, 3, 2, 0)
    assert store.read_window("A").equals(window)
    assert days_of(window) == [1, 2]
    assert window.column("f").to_pylist() == [1.0, 3.0]


def test_the_window_keeps_the_newest_vectors_in_time_order(store):
    for start in range(0, 25, 5):  # five batches of five bars, window of 20
        days = list(range(start, start + 5))
        store.write_batch(bars(["A"] * 5, days, f=[float(d) for d in days]), "v1", window=20)
    window = store.read_window("A")
    assert days_of(window) == list(range(5, 25))
    assert window.column("f").to_pylist() == [float(d) for d in range(5, 25)]
    assert days_of(store.read_window("A", n=3)) == [22, 23, 24]
    assert window.schema.metadata == {b"spec_version": b"v1"}


def test_one_batch_longer_than_the_window_keeps_its_newest_and_counts_the_rest_stale(store):
    days = [4, 0, 3, 1, 2]  # not in time order: the store sorts each symbol's rows
    result = store.write_batch(bars(["A"] * 5, days, f=[float(d) for d in days]), "v1", window=3)
    assert (result.written, result.stale) == (3, 2)
    assert days_of(store.read_window("A")) == [2, 3, 4]
    assert store.read("A")["as_of"] == "2024-01-05T00:00:00.000000Z"


def test_an_older_vector_joins_the_window_but_never_replaces_the_latest(store):
    store.write_batch(bars(["A", "A"], [10, 12], f=[10.0, 12.0]), "v1", window=3)
    late = store.write_batch(bars(["A"], [11], f=[11.0]), "v1", window=3)
    assert (late.written, late.stale, late.latest) == (1, 0, 0)
    assert days_of(store.read_window("A")) == [10, 11, 12]
    assert store.read("A") == {
        "as_of": "2024-01-13T00:00:00.000000Z",
        "spec_version": "v1",
        "f": 12.0,
    }
    too_old = store.write_batch(bars(["A"], [9], f=[9.0]), "v1", window=3)
    assert (too_old.written, too_old.stale, too_old.latest) == (0, 1, 0)
    assert days_of(store.read_window("A")) == [10, 11, 12]


def test_multi_row_batches_of_interleaved_symbols(store):
    rng = np.random.default_rng(7)
    symbols = [f"S{i:03d}" for i in range(50)]
    rows = [(s, d) for d in range(4) for s in symbols]  # as a consumer sees them: by time
    values = rng.normal(size=(len(rows), 3))
    batch = bars(
        [s for s, _ in rows],
        [d for _, d in rows],
        **{f"c{j}": values[:, j].tolist() for j in range(3)},
    )
    result = store.write_batch(batch, "v2", window=20)
    assert (result.written, result.stale, result.symbols, result.latest) == (200, 0, 50, 50)
    for index in (0, 17, 49):
        window = store.read_window(symbols[index])
        assert days_of(window) == [0, 1, 2, 3]
        expected = values[[d * 50 + index for d in range(4)]]
        np.testing.assert_array_equal(window.select(["c0", "c1", "c2"]).to_pandas(), expected)


def test_read_latest_of_many_symbols_in_the_order_asked_and_without_missing_ones(store):
    rng = np.random.default_rng(3)
    symbols = [f"S{i:03d}" for i in range(300)]
    values = rng.normal(size=(300, 2)) * 10.0 ** rng.integers(-300, 300, size=(300, 2))
    values[5, 1] = np.nan
    batch = bars(symbols, [3] * 300, a=values[:, 0].tolist(), b=values[:, 1].tolist())
    store.write_batch(batch, "v3", window=2)
    asked = ["S299", "MISSING", *symbols[:299]]
    latest = store.read_latest(asked)
    assert latest.column_names == ["symbol", "ts", "spec_version", "a", "b"]
    assert latest.column("symbol").to_pylist() == ["S299", *symbols[:299]]
    assert set(latest.column("spec_version").to_pylist()) == {"v3"}
    assert days_of(latest) == [3] * 300
    order = [299, *range(299)]
    got = np.column_stack([latest.column("a").to_numpy(), latest.column("b").to_numpy()])
    np.testing.assert_array_equal(got, values[order])  # exact: the text form round-trips
    assert store.read_latest(["MISSING"]).num_rows == 0


def test_a_new_spec_layout_empties_the_window_instead_of_mixing_widths(store):
    store.write_batch(bars(["A", "A"], [1, 2], f=[1.0, 2.0]), "v1", window=5)
    store.write_batch(bars(["A"], [3], f=[3.0], g=[30.0]), "v2", window=5)
    window = store.read_window("A")
    assert window.column_names == ["ts", "f", "g"] and days_of(window) == [3]
    assert window.schema.metadata == {b"spec_version": b"v2"}
    assert store.read_window("NOBODY").column_names == ["ts"]


def test_write_replaces_only_latest_vectors_and_leaves_windows_alone(store):
    store.write_batch(bars(["A"], [1], f=[1.0]), "v1", window=5)
    result = store.write(bars(["A", "A", "B"], [3, 2, 1], f=[3.0, 2.0, 9.0]), "v1")
    assert (result.written, result.stale, result.latest) == (2, 1, 2)
    assert store.read("A")["f"] == 3.0 and store.read("B")["f"] == 9.0
    assert days_of(store.read_window("A")) == [1]
    assert store.read_window("B").num_rows == 0
    assert store.write(bars(["B"], [1], f=[5.0]), "v1").stale == 1


def test_writes_survive_a_server_that_lost_its_scripts(store):
    store.write_batch(bars(["A"], [1], f=[1.0]), "v1", window=5)
    store.client.script_flush()
    assert store.write_batch(bars(["A"], [2], f=[2.0]), "v1", window=5).written == 1
    assert days_of(store.read_window("A")) == [1, 2]


def test_bad_window_is_a_user_error(store):
    with pytest.raises(UserError, match="window must be 0 or more"):
        store.write_batch(bars(["A"], [1], f=[1.0]), "v1", window=-1)


def test_batch_events_in_order_after_an_id_and_capped(store):
    first = store.publish_event(datetime(2024, 1, 2, 15, 30, tzinfo=UTC), ["A", "B"], "v1")
    second = store.publish_event("2024-01-02T15:31:00", ["C"], "v1")
    result = store.write_batch(
        bars(["D", "E"], [1, 1], f=[1.0, 2.0]),
        "v1",
        window=2,
        event_as_of="2024-01-02T15:32:00+01:00",
    )
    events = store.read_events()
    assert [e.id for e in events] == [first, second, result.event_id]
    assert [e.symbols for e in events] == [["A", "B"], ["C"], ["D", "E"]]
    assert [e.as_of.isoformat() for e in events] == [
        "2024-01-02T15:30:00+00:00",
        "2024-01-02T15:31:00+00:00",
        "2024-01-02T14:32:00+00:00",
    ]
    assert [e.id for e in store.read_events(after=first, count=1)] == [second]
    assert store.read_events(after=result.event_id) == []
    with pytest.raises(UserError, match="as_of"):
        store.publish_event("yesterday", ["A"], "v1")
    capped = OnlineStore(
        store.client, prefix=store.prefix, events_key=store.events_key + ":cap", events_maxlen=100
    )
    for i in range(1000):
        capped.publish_event("2024-01-02", [f"S{i}"], "v1")
    kept = store.client.xlen(capped.events_key)
    assert 100 <= kept < 1000  # MAXLEN ~ trims whole nodes: about 100 kept


def test_checkpoints_round_trip_overwrite_and_clear(redis_settings):
    client = redis_client(redis_settings)
    checkpoints = CheckpointStore(client, prefix=f"test:{uuid.uuid4().hex[:8]}:checkpoint:")
    state = bytes(range(256)) * 40
    before = datetime.now(UTC)
    checkpoints.save("g", "bars", 0, 1234, state)
    checkpoints.save("g", "bars", 3, 7, b"")
    checkpoints.save("g:other", "bars", 0, 99, b"x")
    saved = checkpoints.load("g", "bars", 0)
    assert (saved.offset, saved.state) == (1234, state)
    assert before.timestamp() - 1 <= saved.saved_at.timestamp() <= datetime.now(UTC).timestamp()
    checkpoints.save("g", "bars", 0, 1300, b"later")
    assert (checkpoints.load("g", "bars", 0).offset, checkpoints.load("g", "bars", 0).state) == (
        1300,
        b"later",
    )
    assert checkpoints.load("g", "bars", 1) is None
    assert checkpoints.load("g", "ticks", 0) is None
    assert checkpoints.clear("g") == 2
    assert checkpoints.load("g", "bars", 0) is None and checkpoints.load("g", "bars", 3) is None
    assert checkpoints.load("g:other", "bars", 0).offset == 99
    assert checkpoints.clear("g") == 0
    with pytest.raises(UserError, match="offset must be 0 or more"):
        checkpoints.save("g", "bars", 0, -1, b"")
    configured = checkpoint_store(redis_settings)
    group = f"test-{uuid.uuid4().hex[:8]}"
    configured.save(group, "bars", 2, 5, b"y")
    assert client.hget(f"ray_apps:stream:checkpoint:{group}", "bars/2") is not None
    assert configured.clear(group) == 1


def test_redis_failures_are_user_errors(redis_settings):
    dead = redis.Redis(port=redis_settings.redis.port, password="wrong")
    with pytest.raises(UserError, match="redis:"):
        OnlineStore(dead).write_batch(bars(["A"], [1], f=[1.0]), "v1", window=2)
    with pytest.raises(UserError, match="redis:"):
        CheckpointStore(dead).load("g", "bars", 0)


def test_latest_vectors_written_before_windows_existed_still_read(store):
    store.client.hset(
        store.prefix + "OLD",
        mapping={
            "as_of": "2024-01-02T00:00:00.000000Z",
            "spec_version": "1",
            "f": "0.1",
            "g": "nan",
        },
    )
    vector = store.read("OLD")
    assert (vector["as_of"], vector["spec_version"], vector["f"]) == (
        "2024-01-02T00:00:00.000000Z",
        "1",
        0.1,
    )
    assert np.isnan(vector["g"])
    assert store.read_latest(["OLD"]).column_names == ["symbol", "ts", "spec_version", "f", "g"]
