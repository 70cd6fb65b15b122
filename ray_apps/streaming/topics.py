"""The platform's Kafka topics, and the producer settings its producers share."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ray_apps.config import Settings
from ray_apps.errors import UserError

_TIMEOUT_S = 10.0


def topic_names(settings: Settings) -> list[str]:
    """``ticks``, ``bars``, ``predictions`` and the dead-letter topics of the two inputs."""
    stream = settings.stream
    return [
        stream.ticks_topic,
        stream.bars_topic,
        stream.predictions_topic,
        stream.dead_letter_topic(stream.ticks_topic),
        stream.dead_letter_topic(stream.bars_topic),
    ]


def ensure_topics(settings: Settings) -> list[str]:
    """Create the platform's topics that are missing, with ``stream.partitions`` partitions.

    Raises:
        UserError: the broker is not reachable, refuses to create a topic, or a topic exists
            with another partition count (the local broker cannot add partitions).
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka.servers, "log_level": 0})
    names = topic_names(settings)
    wanted = settings.stream.partitions
    try:
        existing = admin.list_topics(timeout=_TIMEOUT_S).topics
    except KafkaException as exc:
        raise UserError(
            f"the Kafka broker at {settings.kafka.servers} is not reachable; run `ray-apps stack "
            "up` (or set RAY_APPS_KAFKA__BOOTSTRAP_SERVERS)"
        ) from exc
    for name in names:
        if name in existing and len(existing[name].partitions) != wanted:
            raise UserError(
                f"topic {name} has {len(existing[name].partitions)} partitions, not "
                f"stream.partitions={wanted}; delete the topic or set RAY_APPS_STREAM__PARTITIONS"
            )
    missing = [NewTopic(n, num_partitions=wanted) for n in names if n not in existing]
    for name, future in (admin.create_topics(missing) if missing else {}).items():
        try:
            future.result(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise UserError(f"cannot create topic {name}: {exc.args[0]}") from exc
    return names


def producer_config(settings: Settings) -> dict:
    """An idempotent producer batching for throughput (replay and dead letters use it)."""
    return {
        "bootstrap.servers": settings.kafka.servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "compression.type": "lz4",
        "log_level": 0,
    }
