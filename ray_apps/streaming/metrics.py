"""A consumer's figures: Prometheus metrics through Ray's metrics API, and the same in numbers.

Ray exports the metrics of every actor on the node's metrics port (the dashboard's Prometheus
endpoint); ``ray-apps stream status`` reads the numbers each consumer keeps itself
(:meth:`ConsumerMetrics.snapshot`), which need no Prometheus server.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from pydantic import BaseModel
from ray.util import metrics

#: Seconds; the histogram buckets of batch latency and freshness.
_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
#: Freshness samples kept for the percentiles in the status.
_SAMPLES = 20_000


class ConsumerStatus(BaseModel):
    """One consumer's figures, as ``ray-apps stream status`` prints them."""

    name: str
    state: str
    partitions: list[str]
    consumed: dict[str, int]
    dead_letters: dict[str, int]
    skipped: int
    batches: int
    bars_applied: int
    bars_stored: int
    first_message_at: float | None
    last_stored_at: float | None
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    freshness_p50_ms: float | None
    freshness_p99_ms: float | None
    lag: dict[str, int]
    checkpoints: int
    errors: int
    last_error: str | None
    uptime_s: float


class ConsumerMetrics:
    """The counters of one consumer, exported to Prometheus and kept for the status."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        tags = ("consumer", "topic")
        self._consumed = metrics.Counter(
            "ray_apps_stream_messages_consumed", "Messages consumed", tag_keys=tags
        )
        self._dead = metrics.Counter(
            "ray_apps_stream_dead_letters",
            "Messages sent to a dead-letter topic, by reason",
            tag_keys=(*tags, "reason"),
        )
        self._latency = metrics.Histogram(
            "ray_apps_stream_batch_latency_seconds",
            "Seconds from a micro-batch's poll to its features in Redis",
            boundaries=_BOUNDARIES,
            tag_keys=("consumer",),
        )
        self._freshness = metrics.Histogram(
            "ray_apps_stream_freshness_seconds",
            "Seconds from a message's produce time to its features in Redis (a batch's oldest)",
            boundaries=_BOUNDARIES,
            tag_keys=("consumer",),
        )
        self._lag = metrics.Gauge(
            "ray_apps_stream_consumer_lag",
            "Messages behind the partition's end",
            tag_keys=(*tags, "partition"),
        )
        self.consumed: dict[str, int] = {}
        self.dead: dict[str, int] = {}
        self.lag: dict[str, int] = {}
        self.skipped = 0
        self.batches = 0
        self.bars_applied = 0
        self.bars_stored = 0
        self.first_message_at: float | None = None
        self.last_stored_at: float | None = None
        self.checkpoints = 0
        self.errors = 0
        self.last_error: str | None = None
        self._latencies: deque[float] = deque(maxlen=_SAMPLES)
        self._fresh: deque[float] = deque(maxlen=_SAMPLES)
        self._started = time.monotonic()

    def count_consumed(self, topic: str, n: int) -> None:
        """Messages read from a topic."""
        if self.first_message_at is None:
            self.first_message_at = time.time()
        self.consumed[topic] = self.consumed.get(topic, 0) + n
        self._consumed.inc(n, tags={"consumer": self.consumer, "topic": topic})

    def count_dead(self, topic: str, reason: str) -> None:
        """One dead letter."""
        key = f"{topic}:{reason}"
        self.dead[key] = self.dead.get(key, 0) + 1
        self._dead.inc(1, tags={"consumer": self.consumer, "topic": topic, "reason": reason})

    def observe_batch(self, seconds: float, freshness_s: np.ndarray) -> None:
        """One micro-batch stored in Redis: its latency and its messages' freshness."""
        self.batches += 1
        self._latencies.append(seconds)
        self._latency.observe(seconds, tags={"consumer": self.consumer})
        if freshness_s.size:
            self._fresh.extend(freshness_s.tolist())
            self._freshness.observe(float(freshness_s.max()), tags={"consumer": self.consumer})

    def stored(self, bars: int) -> None:
        """Bars written to the offline store (and checkpointed, and committed)."""
        self.bars_stored += bars
        self.last_stored_at = time.time()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Messages behind the end of one partition."""
        self.lag[f"{topic}[{partition}]"] = lag
        tags = {"consumer": self.consumer, "topic": topic, "partition": str(partition)}
        self._lag.set(lag, tags=tags)

    def error(self, message: str) -> None:
        """A batch that failed and will be processed again from the last checkpoint."""
        self.errors += 1
        self.last_error = message

    def snapshot(self, state: str, partitions: list[str]) -> ConsumerStatus:
        """The figures now."""
        latency = _percentiles(self._latencies)
        fresh = _percentiles(self._fresh)
        return ConsumerStatus(
            name=self.consumer,
            state=state,
            partitions=partitions,
            consumed=dict(self.consumed),
            dead_letters=dict(self.dead),
            skipped=self.skipped,
            batches=self.batches,
            bars_applied=self.bars_applied,
            bars_stored=self.bars_stored,
            first_message_at=self.first_message_at,
            last_stored_at=self.last_stored_at,
            batch_p50_ms=latency[0],
            batch_p99_ms=latency[1],
            freshness_p50_ms=fresh[0],
            freshness_p99_ms=fresh[1],
            lag=dict(self.lag),
            checkpoints=self.checkpoints,
            errors=self.errors,
            last_error=self.last_error,
            uptime_s=time.monotonic() - self._started,
        )


def _percentiles(samples: deque[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    p50, p99 = np.percentile(np.fromiter(samples, dtype=np.float64), [50, 99])
    return float(p50) * 1000, float(p99) * 1000
