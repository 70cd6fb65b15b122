"""The online store: the latest feature vector of each symbol, one Redis hash per symbol.

A hash ``<prefix><symbol>`` holds every feature column, ``as_of`` (the bar time, ISO-8601 UTC
with microseconds, so text order is time order) and ``spec_version``. Writes go in pipelined
batches through a server-side script that replaces a vector only with a newer one: a late or
replayed write never overwrites fresher features.
"""

from __future__ import annotations

import pyarrow as pa
import redis
from pydantic import BaseModel

from ray_apps.config import Settings
from ray_apps.errors import UserError


def redis_client(settings: Settings) -> redis.Redis:
    """A client of the configured Redis."""
    cfg = settings.redis
    password = cfg.password.get_secret_value() if cfg.password else None
    return redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        password=password,
        socket_connect_timeout=2,
        socket_timeout=5,
    )


KEY_PREFIX = "ray_apps:features:"
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'as_of')
if current and current >= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], unpack(ARGV, 2))
return 1
"""


class WriteSummary(BaseModel):
    """What one write did: vectors stored, and vectors refused as older than the stored ones."""

    written: int = 0
    stale: int = 0


class OnlineStore:
    """Latest feature vectors in Redis.

    Args:
        client: a Redis client.
        prefix: key prefix of the hashes.
        pipeline_size: vectors per round trip.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = KEY_PREFIX, pipeline_size: int = 500
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.pipeline_size = pipeline_size
        self._script = client.register_script(_WRITE_IF_NEWER)

    def write(self, vectors: pa.Table, spec_version: str) -> WriteSummary:
        """Stores one vector per row (``symbol, ts`` and the feature columns).

        Rows older than (or as old as) the stored vector of their symbol are refused; when a
        batch holds several rows of one symbol, the newest wins.
        """
        summary = WriteSummary()
        features = [c for c in vectors.column_names if c not in ("symbol", "ts")]
        symbols = vectors.column("symbol").to_pylist()
        times = [_iso(ts) for ts in vectors.column("ts").to_pylist()]
        values = [vectors.column(c).to_pylist() for c in features]
        try:
            for first in range(0, len(symbols), self.pipeline_size):
                pipe = self.client.pipeline(transaction=False)
                last = min(first + self.pipeline_size, len(symbols))
                for row in range(first, last):
                    fields: list[str] = ["spec_version", spec_version]
                    for name, column in zip(features, values, strict=True):
                        value = column[row]  # null (from pandas NaN) is undefined too
                        fields += [name, repr(float("nan") if value is None else float(value))]
                    self._script(
                        keys=[self.prefix + symbols[row]],
                        args=[times[row], *fields],
                        client=pipe,
                    )
                for stored in pipe.execute():
                    if stored:
                        summary.written += 1
                    else:
                        summary.stale += 1
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return summary

    def read(self, symbol: str) -> dict[str, float | str] | None:
        """The stored vector of ``symbol`` (None when there is none)."""
        try:
            raw = self.client.hgetall(self.prefix + symbol)
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        if not raw:
            return None
        vector: dict[str, float | str] = {}
        for key, value in raw.items():
            name, text = key.decode(), value.decode()
            vector[name] = text if name in ("as_of", "spec_version") else float(text)
        return vector


def _iso(ts: object) -> str:
    """Fixed-width ISO-8601 UTC text (``2024-01-02T15:30:00.000000Z``)."""
    text = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if len(text) != 27:
        raise UserError(f"online store: time {ts} is out of range")
    return text


def online_store(settings: Settings) -> OnlineStore:
    """The configured online store (``redis.pipeline_size`` vectors per round trip)."""
    return OnlineStore(redis_client(settings), pipeline_size=settings.redis.pipeline_size)
