"""The stream consumer: a detached Ray actor that keeps the online and offline stores fresh.

Each consumer joins one Kafka consumer group on the ``ticks`` and ``bars`` topics and loops in
a thread of its own (so a Ray restart of a killed actor resumes by itself, and ``status`` and
``stop`` answer while it works):

1. poll a micro-batch (at most ``stream.batch_messages`` messages or ``batch_timeout_ms``);
2. per partition: decode, aggregate ticks into bars, check the ingest's bar rules, advance the
   incremental features of all the batch's symbols at once (``streaming.partition``);
3. write the latest vectors and windows to Redis with an event for the serving side, and
   produce dead letters (unparseable, breaking the schema or a bar rule, or late); the Redis
   write runs in a writer thread while the loop polls and decodes the next batch, and is
   awaited before that batch's write and before any checkpoint (one write in flight at most);
4. every ``offline_flush_ms``: send the bars and features to the offline store's owner actor
   (the inserts run while the consumer goes on); once a sending's inserts are done (checked at
   the next flush), checkpoint each partition's state with the offset it reflected when sent,
   then commit those offsets.

A consumer that dies or loses a partition leaves the last checkpoint behind: the partition's
next owner restores that state and seeks to its offset, so whatever came after it is processed
again, giving the same writes, which both stores apply idempotently (bars and features keyed
by symbol, interval and ts; Redis never older over newer, windows keyed by ts). Kafka
transactions are not used (the local broker does not isolate them). Dead letters of messages
processed again are not produced twice: on assignment the consumer reads the tail of the
dead-letter partition to find the last source offset already there.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from ray_apps.config import Settings
from ray_apps.features.spec import FeatureSpec, load_spec
from ray_apps.stores.checkpoints import CheckpointStore, checkpoint_store
from ray_apps.stores.offline_actor import OfflineStoreHandle, offline_store
from ray_apps.stores.online import OnlineStore, online_store
from ray_apps.streaming.messages import DeadLetter, MessageKind, RawMessage, decode_batch
from ray_apps.streaming.metrics import ConsumerMetrics, ConsumerStatus
from ray_apps.streaming.partition import PartitionState
from ray_apps.streaming.topics import producer_config

log = logging.getLogger(__name__)

Key = tuple[str, int]
#: Seconds between two lag measurements.
LAG_EVERY_S = 1.0
#: Seconds between the first tries to recover from a failed batch or write (doubling, up to
#: ``MAX_RETRY_PAUSE_S``).
RETRY_PAUSE_S = 1.0
MAX_RETRY_PAUSE_S = 10.0
#: Allocations between two young-generation collections (Python's default is 700; a
#: micro-batch makes a few objects per message, nearly none of them in cycles).
GC_THRESHOLD = 50_000


def consumer_config(settings: Settings, name: str) -> dict[str, Any]:
    """The confluent-kafka consumer settings of a stream consumer."""
    stream = settings.stream
    return {
        "bootstrap.servers": settings.kafka.servers,
        "group.id": stream.group_id,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": stream.session_timeout_ms,
        "heartbeat.interval.ms": max(100, stream.session_timeout_ms // 3),
        "max.poll.interval.ms": max(stream.max_poll_interval_ms, stream.session_timeout_ms),
        **_client_logging(stream.kafka_debug),
    }


def _client_logging(debug: str) -> dict[str, Any]:
    """The client library's warnings (or, with ``debug`` contexts, everything) to the log."""
    if debug:
        return {"debug": debug, "log_level": 7}
    return {"log_level": 4}


class StreamConsumer:
    """One consumer of the group; its loop starts with the actor.

    Args:
        name: the consumer's name (its actor name and Kafka client id).
        settings: the settings of the command that started it (topics, group, stores).
    """

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        stream = self.settings.stream
        self.spec: FeatureSpec = load_spec(stream.feature_spec)
        self.kinds: dict[str, MessageKind] = {
            stream.ticks_topic: "ticks",
            stream.bars_topic: "bars",
        }
        self.metrics = ConsumerMetrics(name)
        self.states: dict[Key, PartitionState] = {}
        self._assigned: set[Key] = set()
        self._recover_at: float | None = None  # set while recovering from a failure
        self._retry_pause_s = RETRY_PAUSE_S
        self._state = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def status(self) -> ConsumerStatus:
        """The consumer's figures and the partitions it owns."""
        partitions = sorted(f"{t}[{p}]" for t, p in self._assigned)
        return self.metrics.snapshot(self._state, partitions)

    def stop(self, timeout_s: float = 60.0) -> ConsumerStatus:
        """Store what is pending, checkpoint, commit and leave the group."""
        self._stop.set()
        self._thread.join(timeout_s)
        return self.status()

    # The loop, in its own thread.

    def _run(self) -> None:
        try:
            self._open()
            self._state = "running"
            while not self._stop.is_set():
                self._step()
            if self._recover_at is None:
                self._drain()
            self._state = "stopped"
        except Exception as error:  # the loop must report, not vanish
            log.exception("stream consumer %s failed", self.name)
            self._state = f"failed: {type(error).__name__}: {error}"
            self.metrics.error(self._state)
        finally:
            consumer = getattr(self, "consumer", None)
            if consumer is not None:
                consumer.close()
            writer = getattr(self, "_writer", None)
            if writer is not None:
                writer.shutdown(wait=False)

    def _open(self) -> None:
        self.online: OnlineStore = online_store(self.settings)  # used by the writer thread only
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-redis")
        self._online_write: tuple[Future, float, list[int]] | None = None
        self.checkpoints: CheckpointStore = checkpoint_store(self.settings)
        self.offline: OfflineStoreHandle = offline_store(self.settings)
        self.producer = Producer(producer_config(self.settings))
        self.consumer = Consumer(consumer_config(self.settings, self.name))
        self._pending_bars: list[pa.Table] = []
        self._pending_features: dict[str, list[pa.Table]] = defaultdict(list)
        self._offsets: dict[Key, int] = {}  # next offset per partition, processed so far
        self._dirty: set[Key] = set()
        self._sending: tuple[list[ray.ObjectRef], dict[Key, tuple[int, bytes]], int] | None = None
        self._flushed_at = time.monotonic()
        self._lag_at = 0.0
        self._short_watermark = False
        gc.freeze()  # the modules and stores loaded so far live as long as the actor
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        self.consumer.subscribe(
            list(self.kinds),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _step(self) -> None:
        stream = self.settings.stream
        messages = self.consumer.consume(stream.batch_messages, stream.batch_timeout_ms / 1000)
        if self._recover_at is not None:
            # Partitions are paused; what was fetched before is read again after the rewind.
            if time.monotonic() >= self._recover_at:
                self._recover()
            return
        started = time.monotonic()
        try:
            if messages:
                self._process(messages, started)
            now = time.monotonic()
            due = (now - self._flushed_at) * 1000 >= stream.offline_flush_ms
            if self._online_write is not None and (due or self._online_write[0].done()):
                self._finish_online_write()
        except Exception as error:
            self._fail("batch", error)
            return
        if (self._dirty or self._sending) and due:
            try:
                self._flush()
            except Exception as error:
                self._fail("offline write", error)
                return
        if now - self._lag_at >= LAG_EVERY_S:
            self._measure_lag()
            self._lag_at = now

    def _process(self, messages: list, started: float) -> None:
        """One micro-batch: features to Redis now, bars and features kept for the next flush."""
        by_partition: dict[Key, dict[int, RawMessage]] = defaultdict(dict)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("stream consumer %s: %s", self.name, error)
                continue
            key = (message.topic(), message.partition())
            if key not in self.states:
                continue  # a partition revoked while its messages were in flight
            offset = message.offset()
            by_partition[key][offset] = RawMessage(
                key[0], key[1], offset, message.key(), message.value(), message.timestamp()[1]
            )
        features: list[pa.Table] = []
        produced_ms: list[int] = []
        for key, raw in by_partition.items():
            state = self.states[key]
            batch = decode_batch(state.kind, list(raw.values()))
            result = state.process(batch, raw)
            self.metrics.count_consumed(key[0], len(raw))
            self.metrics.skipped += result.skipped
            self.metrics.bars_applied += result.bars.num_rows
            self._dead_letters(state, result.dead)
            if result.bars.num_rows:
                self._pending_bars.append(result.bars)
            for interval, table in result.features.items():
                self._pending_features[interval].append(table)
                features.append(table)
            self._offsets[key] = result.next_offset
            self._dirty.add(key)
            produced_ms += [m.timestamp_ms for m in raw.values()]
        self._finish_online_write()  # the batch before's, so that one write is in flight
        future = self._writer.submit(self._write_online, features)
        self._online_write = (future, started, produced_ms)

    def _write_online(self, features: list[pa.Table]) -> tuple[float, float]:
        """In the writer thread: a batch's vectors and event to Redis; when it was done."""
        changed = pa.concat_tables(features) if features else None
        if changed is not None and changed.num_rows:
            self.online.write_batch(
                changed,
                self.spec.version,
                self.settings.stream.window,
                event_as_of=pc.max(changed.column("ts")).as_py(),
            )
        return time.monotonic(), time.time()

    def _finish_online_write(self) -> None:
        """Waits for the last batch's Redis write (raising its error) and records its times."""
        if self._online_write is None:
            return
        future, started, produced_ms = self._online_write
        self._online_write = None
        done, done_wall = future.result()
        freshness = done_wall * 1000 - np.asarray(produced_ms, dtype=np.float64)
        self.metrics.observe_batch(done - started, np.maximum(freshness, 0) / 1000)

    def _dead_letters(self, state: PartitionState, dead: list[DeadLetter]) -> None:
        for letter in dead:
            if letter.offset <= state.dead_through:
                continue  # already on the dead-letter topic (processed again after a restart)
            self.producer.produce(
                self.settings.stream.dead_letter_topic(letter.topic),
                key=letter.key,
                value=letter.value,
                headers=letter.headers(),
                partition=letter.partition,
            )
            self.metrics.count_dead(letter.topic, letter.reason)
            state.dead_through = letter.offset
        self.producer.poll(0)

    def _flush(self) -> None:
        """Send what is pending to the offline store; checkpoint and commit the last sending.

        Inserts run in the store's actor while this consumer goes on: a sending is
        checkpointed (each partition's state and next offset, as they were when it was sent)
        and its offsets committed once its inserts are done, at the next flush.
        """
        self._finish_online_write()  # a checkpoint must not run ahead of Redis
        self._complete_sending()
        if not self._dirty:
            return
        calls = []
        if self._pending_bars:
            calls.append(self.offline.insert_bars.remote(pa.concat_tables(self._pending_bars)))
        for interval, tables in self._pending_features.items():
            calls.append(
                self.offline.insert_features.remote(
                    pa.concat_tables(tables), interval, self.spec.version, self.spec.fingerprint
                )
            )
        snapshot = {key: (self._offsets[key], self.states[key].save()) for key in self._dirty}
        bars = sum(t.num_rows for t in self._pending_bars)
        self._sending = (calls, snapshot, bars)
        self._pending_bars.clear()
        self._pending_features.clear()
        self._dirty.clear()
        self._flushed_at = time.monotonic()

    def _complete_sending(self) -> None:
        """Offline store, then dead letters, then checkpoints, then offsets: in that order."""
        if self._sending is None:
            return
        calls, snapshot, bars = self._sending
        ray.get(calls)
        undelivered = self.producer.flush(30)
        if undelivered:
            raise RuntimeError(f"{undelivered} dead letters not delivered")
        group = self.settings.stream.group_id
        commits = []
        for (topic, partition), (offset, state) in sorted(snapshot.items()):
            self.checkpoints.save(group, topic, partition, offset, state)
            commits.append(TopicPartition(topic, partition, offset))
        self.consumer.commit(offsets=commits, asynchronous=True)
        self.metrics.checkpoints += len(commits)
        self.metrics.stored(bars)
        self._sending = None

    def _drain(self) -> None:
        """Store, checkpoint and commit everything processed so far."""
        self._flush()
        self._complete_sending()

    def _fail(self, what: str, error: Exception) -> None:
        """Drop what is not checkpointed, pause every partition and recover soon.

        A store or the broker being away must not end the loop: the consumer keeps polling
        (so it stays in the group), with its partitions paused, and retries :meth:`_recover`
        until the stores answer again.
        """
        log.warning("stream consumer %s: %s failed (%s); rewinding", self.name, what, error)
        self.metrics.error(f"{what}: {type(error).__name__}: {error}")
        self._clear_pending()
        self.consumer.pause([TopicPartition(t, p) for t, p in self._assigned])
        self._state = f"recovering: {what} failed"
        self._recover_at = time.monotonic() + self._retry_pause_s

    def _recover(self) -> None:
        """Each partition's state and offset from its checkpoint again, then go on from there."""
        partitions = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        try:
            self._restore(partitions)
            for tp in partitions:
                self.consumer.seek(tp)
        except Exception as error:
            self._retry_pause_s = min(2 * self._retry_pause_s, MAX_RETRY_PAUSE_S)
            self._recover_at = time.monotonic() + self._retry_pause_s
            log.warning("stream consumer %s: recovery failed (%s); retrying", self.name, error)
            self.metrics.error(f"recovery: {type(error).__name__}: {error}")
            return
        self.consumer.resume(partitions)
        self._recover_at = None
        self._retry_pause_s = RETRY_PAUSE_S
        self._state = "running"

    def _clear_pending(self) -> None:
        # a write still running finishes on its own, before any later one (one writer thread)
        self._online_write = None
        self._sending = None
        self._pending_bars.clear()
        self._pending_features.clear()
        self._dirty.clear()

    def _restore(self, partitions: list[TopicPartition]) -> None:
        """Each partition's state and start offset from its checkpoint (set on ``partitions``)."""
        stream = self.settings.stream
        tolerance = int(stream.late_tolerance_s * 1_000_000)
        published = self._published_dead_letters(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            saved = self.checkpoints.load(stream.group_id, tp.topic, tp.partition)
            if saved is None:
                state = PartitionState(self.spec, self.kinds[tp.topic], stream.interval, tolerance)
                tp.offset = OFFSET_BEGINNING
                self._offsets.pop(key, None)
            else:
                state = PartitionState.restore(saved.state, self.spec, tolerance)
                tp.offset = saved.offset
                self._offsets[key] = saved.offset
            state.dead_through = max(state.dead_through, published.get(key, -1))
            self.states[key] = state

    def _published_dead_letters(self, partitions: list[TopicPartition]) -> dict[Key, int]:
        """The last source offset on each partition's dead-letter topic (read from its tail)."""
        stream = self.settings.stream
        tail = stream.batch_messages * 2
        scanner = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.servers,
                "group.id": f"{stream.group_id}-dead-letter-scan",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        try:
            targets = []
            for tp in partitions:
                dead = TopicPartition(stream.dead_letter_topic(tp.topic), tp.partition)
                low, high = scanner.get_watermark_offsets(dead, timeout=10)
                if high >= 0:  # the local broker's is one short: read from low
                    targets.append(
                        TopicPartition(dead.topic, dead.partition, max(low, high - tail))
                    )
            found: dict[Key, int] = {}
            if not targets:
                return found
            scanner.assign(targets)
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 1.0:
                batch = scanner.consume(500, 0.2)
                if batch:
                    quiet_since = time.monotonic()
                for message in batch:
                    if message.error() is not None:
                        continue
                    headers = dict(message.headers() or [])
                    source = (headers["source_topic"].decode(), int(headers["source_partition"]))
                    offset = int(headers["source_offset"])
                    found[source] = max(found.get(source, -1), offset)
            return found
        finally:
            scanner.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self._recover_at is None:
            try:
                self._restore(partitions)
            except Exception as error:  # assigned, then paused until the stores answer
                consumer.assign(partitions)
                self._fail("restoring checkpoints", error)
                return
        consumer.assign(partitions)
        if self._recover_at is not None:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._recover_at is None:
            try:
                self._drain()
            except Exception:  # the next owner starts from the last checkpoint instead
                log.exception("stream consumer %s: flush on revoke failed", self.name)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._clear_pending()
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.discard(key)
            self.states.pop(key, None)
            self._offsets.pop(key, None)
            self.metrics.lag.pop(f"{tp.topic}[{tp.partition}]", None)

    def _measure_lag(self) -> None:
        """Messages behind each owned partition's end; right on Kafka and on the local broker.

        Kafka's high watermark is the offset after the last message; the local broker reports
        one less. A high watermark below the next offset to read shows which one this is.
        """
        for topic, partition in list(self.states):
            position = self._offsets.get((topic, partition))
            # The high watermark the last fetch brought: asking the broker (cached=False)
            # costs a round trip per partition, which the local broker answers slowly.
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if position is None or high < 0:
                continue
            if high < position:
                self._short_watermark = True
            lag = max(0, high + int(self._short_watermark) - position)
            self.metrics.set_lag(topic, partition, lag)
