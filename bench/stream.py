"""Stream throughput and freshness: broker -> consumer actors -> Redis and the offline store.

Starts a private stack on free ports in a temp folder, so it never touches yours, and prints,
in one run, for the same topic of N synthetic bars:
  - baseline: a bare confluent-kafka consumer reading the topic (no decoding, no stores): the
    ceiling;
  - ``ray-apps`` stream consumers, 1 and 2: sustained bars/s end to end, from the first message
    consumed to the last bar stored in the offline store (checkpointed and committed), each run
    in its own consumer group reading the whole topic;
  - freshness at a fixed rate below saturation (default 5,000 bars/s): p50/p99 from a
    message's produce time to its features in Redis, beside the same from produce time to a
    bare consumer's poll (what the broker alone costs).

    python bench/stream.py [--symbols 200] [--bars 2500] [--rate 5000] [--seconds 10]
                           [--encoding binary|json]

Measured 2026-11-26, 2-core machine, nothing else running, two runs (binary messages; the
second with the Redis write overlapped): bare consumer 167,949 / 172,460 msg/s; 1 consumer
50,940 / 55,222, 2 consumers 57,310 / 57,903 bars/s end to end; at 5,000 bars/s produce ->
Redis p50 534 / 572 ms, p99 1,015 / 1,064 ms, produce -> bare consumer p50 355 / 344 ms, p99
826 / 699 ms. With JSON messages the same day: 41,301 / 46,580 bars/s against a bare
194,845. The figures move by a fifth between runs on this shared machine.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.marketdata.schema import BAR_SCHEMA
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.stack import stack_down, stack_up
from ray_apps.stack.isolated import isolated_overrides
from ray_apps.streaming.control import start_consumers, stop_consumers, stream_status
from ray_apps.streaming.replay import ReplayRequest, run_replay
from ray_apps.streaming.topics import ensure_topics

quiet = lambda _: None  # noqa: E731


def bare_consumer(settings: Settings, topic: str, expected: int) -> float:
    """Seconds a plain consumer takes to read ``expected`` messages (from its first one)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": "bench-bare",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": settings.stream.session_timeout_ms,
            "log_level": 3,
        }
    )
    consumer.subscribe([topic])
    read, first = 0, None
    while read < expected:
        batch = consumer.consume(5000, 1.0)
        if batch and first is None:
            first = time.perf_counter()
        read += sum(1 for m in batch if m.error() is None)
    seconds = time.perf_counter() - first
    consumer.close()
    return seconds


def end_to_end(settings: Settings, consumers: int, expected: int) -> float:
    """Bars/s of ``consumers`` stream consumers over the whole topic (a fresh group)."""
    start_consumers(settings, consumers, echo=quiet)
    try:
        while True:
            statuses = stream_status(settings).consumers
            if sum(s.bars_stored for s in statuses) >= expected:
                break
            time.sleep(0.5)
        first = min(s.first_message_at for s in statuses if s.first_message_at)
        last = max(s.last_stored_at for s in statuses if s.last_stored_at)
    finally:
        stop_consumers(settings, echo=quiet)
    return expected / (last - first)


def bare_freshness(
    settings: Settings, bars, rate: float, seconds: float, encoding: str
) -> tuple[float, float]:
    """p50/p99 milliseconds from produce to a bare consumer's poll at a fixed rate."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": "bench-bare-fresh",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "session.timeout.ms": settings.stream.session_timeout_ms,
            "log_level": 3,
        }
    )
    consumer.subscribe([settings.stream.bars_topic])
    while not consumer.assignment():
        consumer.consume(100, 0.5)
    count = int(rate * seconds)
    latencies: list[float] = []
    producer = threading.Thread(
        target=run_replay,
        args=(
            [bars.slice(0, count)],
            ReplayRequest(source="bench", rate=rate, encoding=encoding),
            settings,
            quiet,
        ),
    )
    producer.start()
    deadline = time.monotonic() + seconds + 60
    while len(latencies) < count and time.monotonic() < deadline:
        for message in consumer.consume(5000, 0.1):
            if message.error() is None:
                latencies.append(time.time() - message.timestamp()[1] / 1000)
    producer.join()
    consumer.close()
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return float(p50), float(p99)


def freshness(
    settings: Settings, bars, rate: float, seconds: float, encoding: str
) -> tuple[float, float]:
    """p50/p99 milliseconds from produce to Redis at a fixed rate, one consumer."""
    start_consumers(settings, 1, echo=quiet)
    try:
        while not stream_status(settings).consumers[0].partitions:
            time.sleep(0.5)  # joined the group
        count = int(rate * seconds)
        run_replay(
            [bars.slice(0, count)],
            ReplayRequest(source="bench", rate=rate, encoding=encoding),
            settings,
            quiet,
        )
        while stream_status(settings).consumers[0].bars_stored < count:
            time.sleep(0.5)
        status = stream_status(settings).consumers[0]
    finally:
        stop_consumers(settings, echo=quiet)
    return status.freshness_p50_ms, status.freshness_p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--bars", type=int, default=2500)
    parser.add_argument("--rate", type=float, default=5000.0, help="bars/s of the freshness run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the freshness run")
    parser.add_argument("--encoding", choices=("binary", "json"), default="binary")
    args = parser.parse_args()
    spec = SyntheticSpec(n_symbols=args.symbols, n_bars=args.bars)
    bars = validate_bars(generate_bars(spec), spec.interval).bars.cast(BAR_SCHEMA)
    bars = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    rows = bars.num_rows
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        base = Settings(**isolated_overrides(Path(tmp) / "stack"))
        stack_up(base, echo=quiet)
        try:
            connect_ray(base)
            loaded = _with_stream(base, bars_topic="bench-bars", group_id="bench-load")
            ensure_topics(loaded)
            started = time.perf_counter()
            run_replay([bars], ReplayRequest(source="bench", encoding=args.encoding), loaded, quiet)
            produce_s = time.perf_counter() - started
            print(
                f"{rows:,} synthetic bars ({args.symbols} symbols x {args.bars}, "
                f"{args.encoding}) produced in "
                f"{produce_s:.1f} s ({rows / produce_s:,.0f} msg/s)"
            )
            bare = rows / bare_consumer(loaded, "bench-bars", rows)
            rates = {}
            for n in (1, 2):
                group = _with_stream(base, bars_topic="bench-bars", group_id=f"bench-e2e-{n}")
                rates[n] = end_to_end(group, n, rows)
            fresh = _with_stream(base, bars_topic="bench-fresh", group_id="bench-fresh")
            ensure_topics(fresh)
            floor = _with_stream(base, bars_topic="bench-fresh-bare", group_id="bench-fresh-bare")
            ensure_topics(floor)
            bare_p50, bare_p99 = bare_freshness(floor, bars, args.rate, args.seconds, args.encoding)
            p50, p99 = freshness(fresh, bars, args.rate, args.seconds, args.encoding)
        finally:
            stack_down(base, echo=quiet)
    print(f"{'path':<52}{'bars/s':>12}{'vs bare':>10}")
    print(f"{'baseline: bare confluent-kafka consumer (no work)':<52}{bare:>12,.0f}{1:>9.2f}x")
    for n, rate in rates.items():
        name = f"ray-apps stream, {n} consumer(s), end to end"
        print(f"{name:<52}{rate:>12,.0f}{rate / bare:>9.2f}x")
    print(
        f"at {args.rate:,.0f} bars/s, produce -> bare consumer poll (the broker's floor): "
        f"p50 {bare_p50:.1f} ms, p99 {bare_p99:.1f} ms"
    )
    print(
        f"at {args.rate:,.0f} bars/s, produce -> features in Redis (ray-apps stream): "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    print("aims: end to end >= 50,000 bars/s and >= 1/3 of the bare consumer; p99 < 100 ms")


def _with_stream(settings: Settings, **stream) -> Settings:
    return settings.model_copy(update={"stream": settings.stream.model_copy(update=stream)})


if __name__ == "__main__":
    main()
