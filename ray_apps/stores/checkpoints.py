"""Stream consumer checkpoints in Redis: per partition, the next offset and the consumer's state.

One hash per consumer group, ``<prefix><group>``, with one field per partition,
``<topic>/<partition>``. A field's value packs the checkpoint: the next offset to consume
(8 bytes, big-endian signed), the save time in seconds since the epoch (8 bytes, big-endian
float64), then the state bytes. One ``HSET`` writes offset and state together, so a reader never
sees one without the other; Redis's append-only file (``appendfsync everysec``) keeps them
across a restart, except the last second.
"""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime

import redis
from pydantic import BaseModel, ConfigDict

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.stores.online import redis_client

CHECKPOINT_PREFIX = "ray_apps:stream:checkpoint:"
_HEADER = struct.Struct(">qd")


class Checkpoint(BaseModel):
    """Where a partition's consumer stopped, and its state there."""

    model_config = ConfigDict(frozen=True)

    offset: int
    state: bytes
    saved_at: datetime


class CheckpointStore:
    """Partition checkpoints of stream consumer groups.

    Args:
        client: a Redis client.
        prefix: key prefix of the per-group hashes.
    """

    def __init__(self, client: redis.Redis, prefix: str = CHECKPOINT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def save(self, group: str, topic: str, partition: int, offset: int, state: bytes) -> None:
        """Saves a partition's checkpoint (``offset`` is the next offset to consume), atomically.

        Raises:
            UserError: a negative partition or offset, or Redis fails.
        """
        if partition < 0:
            raise UserError(f"checkpoint: partition must be 0 or more, not {partition}")
        if offset < 0:
            raise UserError(f"checkpoint: offset must be 0 or more, not {offset}")
        value = _HEADER.pack(offset, time.time()) + bytes(state)
        try:
            self.client.hset(self.prefix + group, _field(topic, partition), value)
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error

    def load(self, group: str, topic: str, partition: int) -> Checkpoint | None:
        """The saved checkpoint of a partition, or None when there is none."""
        try:
            value = self.client.hget(self.prefix + group, _field(topic, partition))
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        if value is None:
            return None
        offset, saved_at = _HEADER.unpack_from(value)
        return Checkpoint(
            offset=offset,
            state=value[_HEADER.size :],
            saved_at=datetime.fromtimestamp(saved_at, UTC),
        )

    def clear(self, group: str) -> int:
        """Deletes every checkpoint of ``group``; returns how many there were."""
        key = self.prefix + group
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hlen(key)
            pipe.delete(key)
            count, _ = pipe.execute()
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return count


def _field(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def checkpoint_store(settings: Settings) -> CheckpointStore:
    """The checkpoint store in the configured Redis."""
    return CheckpointStore(redis_client(settings))
