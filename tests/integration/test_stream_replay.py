"""``ray-apps stream replay`` against the stack's real broker, read back with a plain consumer."""

from __future__ import annotations

import uuid

import pandas as pd
import pyarrow as pa
from confluent_kafka import Consumer

from ray_apps.marketdata.schema import BAR_SCHEMA, bars_table
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.streaming.messages import BarMessage, TickMessage, parse
from ray_apps.streaming.ticks import BarAggregator


def _read_all(settings, topic: str, expected: int) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages, idle = [], 0
    while len(messages) < expected or idle < 3:
        batch = consumer.consume(1000, timeout=2.0)
        idle = 0 if batch else idle + 1
        messages += [m for m in batch if m.error() is None]
        if idle >= 15:
            break
    consumer.close()
    return messages


#: Topics of this module's own (other tests' consumers and replays use the default ones).
TOPICS = {
    "RAY_APPS_STREAM__BARS_TOPIC": "replay-bars",
    "RAY_APPS_STREAM__TICKS_TOPIC": "replay-ticks",
}


def test_replay_publishes_bars_in_time_order_per_key_and_ticks_that_aggregate_back(stack):
    env = dict(stack.env, **TOPICS)
    done = stack.cli("stream", "replay", "--source", "synthetic:5:200:1m", env=env)
    assert done.returncode == 0, done.stderr
    messages = _read_all(stack.settings, "replay-bars", 1000)
    assert len(messages) == 1000
    by_key: dict[bytes, list] = {}
    for message in messages:
        bar = parse("bars", message.value())  # binary, replay's default encoding
        assert isinstance(bar, BarMessage), bar
        assert message.key() == bar.symbol.encode()
        by_key.setdefault(message.key(), []).append(bar.ts)
    assert len(by_key) == 5 and all(len(v) == 200 for v in by_key.values())
    assert all(times == sorted(times) for times in by_key.values())

    done = stack.cli(
        "stream",
        "replay",
        "--source",
        "synthetic:5:200:1m",
        "--topic",
        "ticks",
        "--encoding",
        "json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    ticks = [
        TickMessage.model_validate_json(m.value())
        for m in _read_all(stack.settings, "replay-ticks", 4000)
    ]
    assert len(ticks) == 4000
    table = pa.table(
        {
            "symbol": [t.symbol for t in ticks],
            "ts": pa.array([t.ts for t in ticks], pa.timestamp("us", tz="UTC")),
            "price": [t.price for t in ticks],
            "size": [t.size for t in ticks],
        }
    ).sort_by([("ts", "ascending"), ("symbol", "ascending")])
    aggregator = BarAggregator("1m")
    got = pa.concat_tables([aggregator.add(table), aggregator.flush()]).to_pandas()
    want = bars_table(generate_bars(SyntheticSpec(n_symbols=5, n_bars=200, interval="1m")))
    want = want.cast(BAR_SCHEMA).to_pandas().sort_values(["ts", "symbol"]).reset_index(drop=True)
    got = got.sort_values(["ts", "symbol"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)


def test_bad_replay_options_exit_2_with_one_line(stack):
    for args in (["--rate", "-1"], ["--rate", "5", "--speedup", "2"]):
        done = stack.cli("stream", "replay", "--source", "synthetic:1:5", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = stack.cli("stream", "replay", "--source", "no-such-source")
    assert done.returncode == 2 and "unknown source" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
