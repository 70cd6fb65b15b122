"""Stream consumers against the real broker, Redis and offline store, through crashes."""

import functools
import json
import os
import signal
import sys
import time

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ray_apps.features.spec import load_spec
from ray_apps.stores.online import OnlineStore, redis_client

pytestmark = pytest.mark.integration

SYMBOLS, BARS = 50, 2000
WINDOW = 20

ACTOR_PIDS = """
import ray
from ray.util.state import list_actors
from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
settings = load_settings()
connect_ray(settings)
alive = list_actors(address=settings.ray_address, filters=[("state", "=", "ALIVE")], limit=1000)
print(" ".join(f"{a.name}={a.pid}" for a in alive if a.name.startswith("stream-consumer-")))
"""

STREAM_FEATURES = """
import sys
import pyarrow.parquet as pq
import ray
from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
from ray_apps.stores.offline_actor import offline_store
settings = load_settings()
connect_ray(settings)
store = offline_store(settings)
pq.write_table(ray.get(store.features.remote(spec_version=sys.argv[2], interval="1d")), sys.argv[1])
"""


@pytest.fixture
def streaming(stack):
    """The stack; every stream consumer is stopped after the test, passed or failed.

    A consumer left running holds CPUs that later tests' Ray jobs wait for.
    """
    yield stack
    stack.cli("stream", "stop")


def consumer_pids(stack) -> dict[str, int]:
    done = stack.run(sys.executable, "-c", ACTOR_PIDS)
    assert done.returncode == 0, done.stderr
    return {k: int(v) for k, v in (p.split("=") for p in done.stdout.split())}


def stream_status(stack) -> list[dict]:
    return json.loads(stack.ok("stream", "status", "--json"))


def wait_for(condition, what: str, limit_s: float = 600) -> None:
    """Poll until ``condition()``; the limit only stops a hung test, it measures nothing."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(2)


def stored_bars(stack) -> int:
    records = [r for r in stack.records("symbols") if r["symbol"].startswith("STR")]
    return sum(r["bars"] for r in records)


def read_dead_letters(settings) -> list[tuple[str, dict]]:
    topic = settings.stream.dead_letter_topic(settings.stream.bars_topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.servers, "group.id": "test-dead", "log_level": 3}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.stream.partitions)])
    letters, quiet = [], time.monotonic()
    while time.monotonic() - quiet < 5:
        for message in consumer.consume(100, 0.5):
            if message.error() is None:
                quiet = time.monotonic()
                headers = {k: v.decode() for k, v in message.headers()}
                letters.append((message.value().decode(), headers))
    consumer.close()
    return letters


def test_stream_survives_consumer_kills_and_a_broker_restart(streaming, tmp_path):
    stack = streaming
    settings = stack.settings
    stack.ok("stream", "start", "--consumers", "2")
    assert {s["state"] for s in stream_status(stack)} == {"running"}

    bars = tmp_path / "bars.parquet"
    frame = synthetic_bars()
    frame.to_parquet(bars)
    replay = stack.run_background("stream", "replay", "--source", str(bars), "--rate", "1500")
    # Kill a consumer twice while the replay runs (about 70 s), then restart the broker.
    wait_for(lambda: stored_bars(stack) > 0, "the first stored bars")
    for name in ("stream-consumer-0", "stream-consumer-1"):
        pid = consumer_pids(stack)[name]
        if name.endswith("-0"):
            assert replay.poll() is None, "the replay ended before a consumer was killed"
        os.kill(pid, signal.SIGKILL)
        restarted = functools.partial(lambda n, p: consumer_pids(stack).get(n, p) != p, name, pid)
        wait_for(restarted, f"Ray to restart {name}")
    out, err = replay.communicate()
    assert replay.returncode == 0, out + err
    stack.restart_service("kafka")

    bad = inject_bad_messages(settings)
    wait_for(lambda: stored_bars(stack) == SYMBOLS * BARS, "every bar in the offline store")
    wait_for(
        lambda: (
            sum(sum(s["dead_letters"].values()) for s in stream_status(stack)) >= len(bad)
            or len(read_dead_letters(settings)) >= len(bad)
        ),
        "the dead letters",
    )
    assert stored_bars(stack) == SYMBOLS * BARS  # none lost, none doubled

    letters = read_dead_letters(settings)
    assert sorted((h["reason"], v) for v, h in letters) == sorted(bad)

    # Redis holds, per symbol, what the batch engine computes at the last bars.
    batch = tmp_path / "batch.parquet"
    stack.ok(
        "features",
        "compute",
        "--from-store",
        "--engine",
        "ray",
        "--symbols",
        *sorted(frame.symbol.unique()),
        "--output",
        str(batch),
    )
    expected = pd.read_parquet(batch)
    spec = load_spec()
    online = OnlineStore(redis_client(settings))
    for symbol, rows in expected.groupby("symbol"):
        rows = rows.sort_values("ts")
        window = online.read_window(symbol).to_pandas()
        assert len(window) == WINDOW
        tail = rows.tail(WINDOW)
        np.testing.assert_array_equal(window["ts"].to_numpy(), tail["ts"].to_numpy())
        np.testing.assert_allclose(
            window[spec.columns].to_numpy(),
            tail[spec.columns].to_numpy(),
            rtol=1e-12,
            equal_nan=True,
        )
        latest = online.read(symbol)
        assert latest["as_of"].startswith(str(rows.ts.iloc[-1].date()))

    # The features the stream stored are the Ray Data engine's, row for row.
    streamed_path = tmp_path / "streamed.parquet"
    done = stack.run(sys.executable, "-c", STREAM_FEATURES, str(streamed_path), spec.version)
    assert done.returncode == 0, done.stderr
    streamed = pd.read_parquet(streamed_path)
    streamed = streamed[streamed.symbol.str.startswith("STR")]
    merged = expected.merge(streamed, on=["symbol", "ts"], suffixes=("", "_stream"))
    assert len(merged) == SYMBOLS * BARS
    for column in spec.columns:
        np.testing.assert_allclose(
            merged[column], merged[f"{column}_stream"], rtol=1e-12, equal_nan=True
        )

    stopped = stack.ok("stream", "stop")
    assert "stopped 2 stream consumer(s)" in stopped


def synthetic_bars() -> pd.DataFrame:
    """Daily bars of SYMBOLS symbols (a random walk), BARS each, canonical columns."""
    rng = np.random.default_rng(11)
    days = pd.date_range("2015-01-01", periods=BARS, freq="D", tz="UTC")
    frames = []
    for i in range(SYMBOLS):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
        spread = np.abs(rng.normal(0, 0.005, BARS)) * close
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"STR{i:03d}",
                    "interval": "1d",
                    "ts": days,
                    "open": close * (1 + rng.normal(0, 0.002, BARS)).clip(0.99, 1.01),
                    "close": close,
                    "volume": rng.integers(1000, 100_000, BARS).astype(float),
                    "spread": spread,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["high"] = frame[["open", "close"]].max(axis=1) + frame.spread
    frame["low"] = frame[["open", "close"]].min(axis=1) - frame.spread
    return frame[["symbol", "interval", "ts", "open", "high", "low", "close", "volume"]]


def inject_bad_messages(settings) -> list[tuple[str, str]]:
    """One message per reason, on the bars topic; returns ``(reason, payload)`` pairs."""
    good = {
        "v": 1,
        "symbol": "STR000",
        "interval": "1d",
        "ts": "2030-01-01T00:00:00Z",
        "open": 10.0,
        "high": 11.0,
        "low": 9.0,
        "close": 10.5,
        "volume": 100.0,
    }
    cases = [
        ("unparseable", "{not json"),
        ("missing_field", json.dumps({k: v for k, v in good.items() if k != "close"})),
        ("non_positive_price", json.dumps(good | {"low": -1.0})),
        ("unknown_schema_version", json.dumps(good | {"v": 7})),
        ("late", json.dumps(good | {"symbol": "STR001", "ts": "2015-01-05T00:00:00Z"})),
        ("high_below_open_close", json.dumps(good | {"symbol": "STR002", "high": 10.2})),
    ]
    producer = Producer({"bootstrap.servers": settings.kafka.servers, "log_level": 3})
    for reason, payload in cases:
        symbol = json.loads(payload)["symbol"] if reason != "unparseable" else "STR003"
        producer.produce(settings.stream.bars_topic, key=symbol, value=payload)
    assert producer.flush(30) == 0
    return cases


def test_ticks_become_the_bars_they_were_made_from(streaming, tmp_path):
    stack = streaming
    stack.ok("stream", "start", "--consumers", "1")
    # The group left by the last test's `stream stop` takes a new member.
    wait_for(lambda: stream_status(stack)[0]["partitions"], "partitions for the consumer", 120)
    minutes = 300
    frame = synthetic_bars()
    frame = frame[frame.symbol < "STR003"].groupby("symbol").head(minutes).copy()
    frame["symbol"] = frame.symbol.str.replace("STR", "TCK")
    frame["interval"] = "1m"  # the stream's tick interval (`stream.interval`)
    frame["ts"] = np.tile(pd.date_range("2024-01-02", periods=minutes, freq="min", tz="UTC"), 3)
    path = tmp_path / "minutes.parquet"
    frame.to_parquet(path)
    stack.ok("stream", "replay", "--source", str(path), "--topic", "ticks")

    def stored() -> int:
        return sum(r["bars"] for r in stack.records("symbols") if r["symbol"].startswith("TCK"))

    # Each symbol's last minute stays open: no later tick has closed it.
    wait_for(lambda: stored() == 3 * (minutes - 1), "the aggregated bars")
    got = pd.DataFrame(stack.records("show", "TCK001", "--limit", "1000")).sort_values("ts")
    want = frame[frame.symbol == "TCK001"].head(minutes - 1)
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-9, err_msg=column)
    stack.ok("stream", "stop")


def test_consumers_ride_out_a_redis_outage(streaming, tmp_path):
    stack = streaming
    stack.ok("stream", "start", "--consumers", "1")
    wait_for(lambda: stream_status(stack)[0]["partitions"], "partitions for the consumer", 120)
    frame = synthetic_bars()
    frame = frame[frame.symbol < "STR005"].groupby("symbol").head(400).copy()
    frame["symbol"] = frame.symbol.str.replace("STR", "OUT")
    halves = [frame[frame.ts < frame.ts.iloc[200]], frame[frame.ts >= frame.ts.iloc[200]]]

    def stored() -> int:
        return sum(r["bars"] for r in stack.records("symbols") if r["symbol"].startswith("OUT"))

    first = tmp_path / "first.parquet"
    halves[0].to_parquet(first)
    # JSON then the (default) binary encoding on one topic: consumers read both
    stack.ok("stream", "replay", "--source", str(first), "--encoding", "json")
    wait_for(lambda: stored() == len(halves[0]), "the first half in the offline store")

    stack.kill_service("redis")
    second = tmp_path / "second.parquet"
    halves[1].to_parquet(second)
    stack.ok("stream", "replay", "--source", str(second))
    wait_for(lambda: stream_status(stack)[0]["state"].startswith("recovering"), "a failed write")
    time.sleep(5)  # a few failed recoveries
    stack.ok("stack", "up")

    wait_for(lambda: stored() == len(frame), "every bar in the offline store")
    status = stream_status(stack)[0]
    assert status["state"] == "running", status
    assert status["errors"] >= 2, status  # the failed write and at least one failed recovery

    # Redis holds what the stream stored in the offline store: nothing lost or stale there.
    spec = load_spec()
    streamed_path = tmp_path / "streamed.parquet"
    done = stack.run(sys.executable, "-c", STREAM_FEATURES, str(streamed_path), spec.version)
    assert done.returncode == 0, done.stderr
    streamed = pd.read_parquet(streamed_path)
    online = OnlineStore(redis_client(stack.settings))
    for symbol, rows in streamed[streamed.symbol.str.startswith("OUT")].groupby("symbol"):
        assert len(rows) == 400
        tail = rows.sort_values("ts").tail(WINDOW)
        window = online.read_window(symbol).to_pandas()
        np.testing.assert_array_equal(window["ts"].to_numpy(), tail["ts"].to_numpy())
        np.testing.assert_allclose(
            window[spec.columns].to_numpy(), tail[spec.columns].to_numpy(), equal_nan=True
        )


def test_stream_commands_before_their_prerequisites_are_one_line(stack, tmp_path):
    down = dict(stack.env, RAY_APPS_RAY__PORT="1", RAY_APPS_KAFKA__PORT="1")
    for args in (
        ("stream", "start"),
        ("stream", "status"),
        ("stream", "replay", "--source", "synthetic:2:10"),
    ):
        done = stack.cli(*args, env=down)
        assert done.returncode == 2, done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
