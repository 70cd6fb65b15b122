"""A partition's micro-batches against the batch engine, with bad, late and replayed messages."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from ray_apps.features.batch import compute_table
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.streaming.messages import RawMessage, decode_batch, encode_bars, encode_ticks
from ray_apps.streaming.partition import PartitionState
from ray_apps.streaming.ticks import synthesize_ticks

SPEC = load_spec()
DAY_US = 86_400 * 1_000_000


@pytest.fixture(scope="module")
def bars() -> pa.Table:
    """Three symbols' daily bars, in time order across symbols."""
    raw = generate_bars(SyntheticSpec(n_symbols=3, n_bars=300))
    table = validate_bars(raw, "1d").bars
    table = table.cast(
        pa.schema(
            [
                (f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                for f in table.schema
            ]
        )
    )
    return table.sort_by([("ts", "ascending"), ("symbol", "ascending")])


def raw(values: list[bytes], first_offset: int = 0, topic: str = "bars") -> list[RawMessage]:
    return [
        RawMessage(
            topic=topic, partition=0, offset=first_offset + i, key=None, value=v, timestamp_ms=0
        )
        for i, v in enumerate(values)
    ]


def feed(state: PartitionState, messages: list[RawMessage], batch: int) -> list:
    results = []
    for first in range(0, len(messages), batch):
        part = messages[first : first + batch]
        decoded = decode_batch(state.kind, part)
        results.append(state.process(decoded, {m.offset: m for m in part}))
    return results


def streamed_features(results: list) -> pa.Table:
    return pa.concat_tables(t for r in results for t in r.features.values())


def batch_features(bars: pa.Table) -> pa.Table:
    return compute_table(bars, SPEC).sort_by([("symbol", "ascending"), ("ts", "ascending")])


def assert_same(streamed: pa.Table, expected: pa.Table) -> None:
    streamed = streamed.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    assert streamed.column("symbol").to_pylist() == expected.column("symbol").to_pylist()
    assert streamed.column("ts").to_pylist() == expected.column("ts").to_pylist()
    for column in SPEC.columns:
        np.testing.assert_allclose(
            streamed.column(column).to_numpy(zero_copy_only=False),
            expected.column(column).to_numpy(zero_copy_only=False),
            rtol=1e-12,
            equal_nan=True,
            err_msg=column,
        )


def test_bars_in_micro_batches_equal_the_batch_engine(bars):
    state = PartitionState(SPEC, "bars", "1d")
    results = feed(state, raw(encode_bars(bars)), batch=37)
    assert_same(streamed_features(results), batch_features(bars))
    assert sum(r.bars.num_rows for r in results) == bars.num_rows
    assert results[-1].next_offset == bars.num_rows
    assert not any(r.dead for r in results)


def test_save_and_restore_mid_stream_changes_nothing(bars):
    messages = raw(encode_bars(bars))
    state = PartitionState(SPEC, "bars", "1d")
    first = feed(state, messages[:400], batch=50)
    restored = PartitionState.restore(state.save(), SPEC)
    second = feed(restored, messages[400:], batch=50)
    assert_same(streamed_features(first + second), batch_features(bars))


def test_messages_processed_again_after_a_checkpoint_give_the_same_rows(bars):
    messages = raw(encode_bars(bars))
    state = PartitionState(SPEC, "bars", "1d")
    feed(state, messages[:300], batch=100)
    checkpoint = state.save()
    once = feed(state, messages[300:500], batch=100)  # then the consumer dies
    again = feed(PartitionState.restore(checkpoint, SPEC), messages[300:500], batch=100)
    assert streamed_features(once).equals(streamed_features(again))


def test_bad_messages_are_dead_letters_and_leave_the_state_alone(bars):
    good = encode_bars(bars)
    last = json.loads(good[-1])
    bad = [
        (b"{oops", "unparseable"),
        (json.dumps(last | {"v": 9}).encode(), "unknown_schema_version"),
        (json.dumps(last | {"close": -1.0}).encode(), "non_positive_price"),
        (json.dumps({k: v for k, v in last.items() if k != "volume"}).encode(), "missing_field"),
        (json.dumps(last | {"high": last["low"] * 0.5}).encode(), "high_below_open_close"),
    ]
    values = good[:200] + [b for b, _ in bad] + good[200:]
    state = PartitionState(SPEC, "bars", "1d")
    results = feed(state, raw(values), batch=64)
    dead = [d for r in results for d in r.dead]
    assert [(d.reason, d.offset) for d in dead] == [
        (reason, 200 + i) for i, (_, reason) in enumerate(bad)
    ]
    assert [d.value for d in dead] == [b for b, _ in bad]
    assert_same(streamed_features(results), batch_features(bars))


def test_late_bars_are_dead_letters_beyond_the_tolerance_and_replays_within(bars):
    messages = encode_bars(bars)
    state = PartitionState(SPEC, "bars", "1d", late_tolerance_us=2 * DAY_US)
    feed(state, raw(messages), batch=100)
    last = json.loads(messages[-1])
    last_ts = bars.column("ts")[-1].as_py()
    behind_one_day = last | {"ts": (last_ts - dt.timedelta(days=1)).isoformat()}
    far_behind = last | {"ts": (last_ts - dt.timedelta(days=30)).isoformat()}
    tail = raw(
        [json.dumps(behind_one_day).encode(), json.dumps(far_behind).encode()],
        first_offset=len(messages),
    )
    (result,) = feed(state, tail, batch=10)
    assert [(d.reason, d.offset) for d in result.dead] == [("late", len(messages) + 1)]
    assert result.skipped == 1
    assert result.bars.num_rows == 0


def test_ticks_aggregate_into_the_bars_they_came_from(bars):
    ticks = synthesize_ticks(bars, ticks_per_bar=4, seed=3)
    messages = encode_ticks(
        ticks.column("symbol").to_pylist(),
        ticks.column("ts"),
        ticks.column("price").to_numpy(),
        ticks.column("size").to_numpy(),
    )
    state = PartitionState(SPEC, "ticks", "1d")
    results = feed(state, raw(messages, topic="ticks"), batch=101)
    applied = pa.concat_tables(r.bars for r in results)
    # Each symbol's last bar is still open: no later tick has closed it.
    last_ts = bars.column("ts")[-1]
    closed = bars.filter(pa.compute.less(bars.column("ts"), last_ts))
    key = [("symbol", "ascending"), ("ts", "ascending")]
    applied, closed = applied.sort_by(key), closed.sort_by(key)
    assert applied.column("ts").to_pylist() == closed.column("ts").to_pylist()
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(applied.column(column), closed.column(column), rtol=1e-12)
    assert_same(streamed_features(results), batch_features(closed))


def test_two_intervals_in_one_batch_each_equal_the_batch_engine(bars):
    """Interleaved intervals, with a bad and a late bar among them, each feed their own engine."""
    doubled = bars.set_column(1, "interval", pa.array(["1h"] * bars.num_rows))
    for column in ("open", "high", "low", "close"):
        index = doubled.schema.get_field_index(column)
        doubled = doubled.set_column(index, column, pa.compute.multiply(doubled[column], 2.0))
    daily, hourly = encode_bars(bars), encode_bars(doubled)
    half = len(daily) // 2
    first_hourly = json.loads(hourly[0])
    late = json.dumps(first_hourly).encode()  # behind its symbol's last 1h bar: late
    bad = json.dumps(json.loads(daily[half]) | {"low": 1e9}).encode()  # low above close
    values = [v for pair in zip(daily[:half], hourly[:half], strict=True) for v in pair]
    values += [late, bad]
    values += [v for pair in zip(daily[half:], hourly[half:], strict=True) for v in pair]
    state = PartitionState(SPEC, "bars", "1d")
    results = feed(state, raw(values), batch=101)
    dead = [d for r in results for d in r.dead]
    assert [(d.reason, d.offset) for d in dead] == [
        ("late", 2 * half),
        ("low_above_open_close", 2 * half + 1),
    ]
    for interval, expected in (("1d", bars), ("1h", doubled)):
        streamed = pa.concat_tables(r.features[interval] for r in results if interval in r.features)
        assert_same(streamed, batch_features(expected))
