"""The online store: per symbol, the latest feature vector and a window of the last vectors.

Keys, for a symbol ``S`` under the prefix ``P`` (default ``ray_apps:features:``):

- ``P S`` (a hash): the latest vector. Fields ``as_of`` (the bar time, fixed-width ISO-8601
  UTC with microseconds, so text order is time order), ``spec_version``, ``columns`` (the
  feature columns joined by commas) and ``values`` (the values as little-endian float64s in
  column order, NaN when missing: a record without its time). :meth:`OnlineStore.read` and
  :meth:`OnlineStore.read_latest` decode it; they also read the older form written before
  windows existed (one text field per feature column).
- ``P S:window`` (a sorted set): the newest ``window`` vectors, score = bar time in
  microseconds since the epoch (exact: below 2**53), member = one packed record
  (:mod:`ray_apps.stores.vector_packing`: 8-byte big-endian time, then float64 values
  little-endian in column order). At most one member per time: a replayed vector is refused.
- ``P S:layout`` (a string): the window's ``spec_version`` and its columns joined by commas,
  on two lines. A write under another layout (a new spec) empties the window first, so records
  of different widths never mix.

Every write goes through one server-side script call per symbol, all of a batch in one
pipelined round trip (up to ``pipeline_size`` symbols): it adds the symbol's vectors to its
window (a vector already there, or older than every vector the full window keeps, is
*stale*) and replaces the latest hash with the symbol's newest vector only when that is newer
than the stored one, so a late or replayed write never overwrites fresher features.

Batch events (``ray_apps:stream:events``, a stream capped near 10,000 entries) tell serving
which symbols changed at which time; :meth:`OnlineStore.write_batch` can append one in the same
round trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import redis
from pydantic import BaseModel

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.stores.vector_packing import (
    ISO_LENGTH,
    UTC_MICROS,
    iso_times,
    pack_batch,
    unpack_records,
)


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
WINDOW_SUFFIX = ":window"
LAYOUT_SUFFIX = ":layout"
EVENTS_KEY = "ray_apps:stream:events"
EVENTS_MAXLEN = 10_000

# KEYS: latest hash, window, layout. ARGV: window size (0: latest hash only), spec_version,
# columns joined by commas, ISO time of the newest record, records, then each record's time in
# microseconds. Records are in time order. Returns {written, stale, latest replaced}.
_WRITE_VECTORS = """
local window = tonumber(ARGV[1])
local records = ARGV[5]
local first = 6
local n = #ARGV - first + 1
local size = #records / n
local written, stale = 0, 0
if window > 0 then
  local layout = ARGV[2] .. '\\n' .. ARGV[3]
  if redis.call('GET', KEYS[3]) ~= layout then
    redis.call('DEL', KEYS[2])
    redis.call('SET', KEYS[3], layout)
  end
  local present = {}
  local stored = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[first], '+inf', 'WITHSCORES')
  for j = 2, #stored, 2 do present[tonumber(stored[j])] = true end
  local added, adds = {}, {}
  for i = 1, n do
    local score = tonumber(ARGV[first - 1 + i])
    if present[score] then
      stale = stale + 1
    else
      present[score] = true
      added[#added + 1] = score
      adds[#adds + 1] = ARGV[first - 1 + i]
      adds[#adds + 1] = string.sub(records, (i - 1) * size + 1, i * size)
      if #adds == 2000 then
        redis.call('ZADD', KEYS[2], unpack(adds))
        adds = {}
      end
    end
  end
  if #adds > 0 then redis.call('ZADD', KEYS[2], unpack(adds)) end
  local count = redis.call('ZCARD', KEYS[2])
  local oldest = nil
  if count > window then
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, count - window - 1)
    oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  end
  for _, score in ipairs(added) do
    if oldest and score < oldest then stale = stale + 1 else written = written + 1 end
  end
end
local current = redis.call('HGET', KEYS[1], 'as_of')
local replaced = 0
if not current or current < ARGV[4] then
  local fields = {'as_of', ARGV[4], 'spec_version', ARGV[2], 'columns', ARGV[3],
                  'values', string.sub(records, (n - 1) * size + 9, n * size)}
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(fields))
  replaced = 1
end
if window == 0 then
  written = replaced
  stale = n - replaced
end
return {written, stale, replaced}
"""


# KEYS: latest hashes. Returns each one's as_of and spec_version, in order (nil when absent).
_LATEST_TIMES = """
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'as_of', 'spec_version')
  out[2 * i - 1] = fields[1]
  out[2 * i] = fields[2]
end
return out
"""

# KEYS: layout, window, of each symbol in turn. ARGV: the newest score to take ('+inf' or
# microseconds), the most records per symbol. Returns each symbol's layout (nil when absent)
# and its newest records up to that score, newest first.
_READ_WINDOWS = """
local out = {}
for i = 1, #KEYS, 2 do
  out[i] = redis.call('GET', KEYS[i])
  out[i + 1] = redis.call('ZRANGE', KEYS[i + 1], ARGV[1], '-inf', 'BYSCORE', 'REV',
                          'LIMIT', 0, ARGV[2])
end
return out
"""


class WriteSummary(BaseModel):
    """What one write did.

    Attributes:
        written: vectors stored (in a window; with no window, latest vectors replaced).
        stale: vectors refused: already stored, older than every vector a full window keeps,
            or (with no window) not newer than the stored latest vector.
        symbols: symbols the write touched.
        latest: symbols whose latest vector was replaced.
        event_id: the id of the batch event appended with the write, if one was.
    """

    written: int = 0
    stale: int = 0
    symbols: int = 0
    latest: int = 0
    event_id: str | None = None


class BatchEvent(BaseModel):
    """One batch event: these symbols have new features as of this time."""

    id: str
    as_of: datetime
    symbols: list[str]
    spec_version: str


class OnlineStore:
    """Latest feature vectors and windows of recent vectors in Redis.

    Args:
        client: a Redis client.
        prefix: key prefix of the per-symbol keys.
        pipeline_size: symbols per round trip.
        events_key: the stream of batch events.
        events_maxlen: about how many events the stream keeps.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = KEY_PREFIX,
        pipeline_size: int = 1000,
        events_key: str = EVENTS_KEY,
        events_maxlen: int = EVENTS_MAXLEN,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.pipeline_size = pipeline_size
        self.events_key = events_key
        self.events_maxlen = events_maxlen
        self._script = client.register_script(_WRITE_VECTORS)
        self._latest_times = client.register_script(_LATEST_TIMES)
        self._read_windows = client.register_script(_READ_WINDOWS)
        self._script_loaded = False

    def write(
        self, vectors: pa.Table, spec_version: str, event_as_of: datetime | str | None = None
    ) -> WriteSummary:
        """Stores the newest row of each symbol as its latest vector; windows are left alone.

        Rows not newer than the stored vector of their symbol are refused; when a batch holds
        several rows of one symbol, the newest wins and the others count as stale. With
        ``event_as_of``, a batch event is appended as :meth:`write_batch` does.
        """
        return self.write_batch(vectors, spec_version, window=0, event_as_of=event_as_of)

    def write_batch(
        self,
        features: pa.Table,
        spec_version: str,
        window: int,
        event_as_of: datetime | str | None = None,
    ) -> WriteSummary:
        """Adds a micro-batch of vectors to the windows and latest vectors of their symbols.

        Idempotent: writing the same batch again changes nothing and counts every vector stale.

        Args:
            features: ``symbol, ts`` and float feature columns, any number of rows per symbol.
            spec_version: the feature spec's version label, stored with the vectors.
            window: vectors kept per symbol (the newest, by ``ts``); 0 keeps no window and
                only replaces latest vectors, as :meth:`write` does.
            event_as_of: if given, a batch event naming every symbol of the batch at this time
                is appended in the same round trip (as :meth:`publish_event` does).

        Raises:
            UserError: a bad table or window, or Redis fails.
        """
        if window < 0:
            raise UserError(f"online store: window must be 0 or more, not {window}")
        batch = pack_batch(features)
        summary = WriteSummary(symbols=len(batch.symbols))
        names = ",".join(batch.columns)
        size = batch.record_size
        event = self._event_fields(event_as_of, batch.symbols, spec_version)
        try:
            for first in range(0, len(batch.symbols), self.pipeline_size):
                group = range(first, min(first + self.pipeline_size, len(batch.symbols)))
                calls = []
                for index in group:
                    start = batch.ends[index - 1] if index else 0
                    end = batch.ends[index]
                    key = self.prefix + batch.symbols[index]
                    calls.append(
                        (
                            key,
                            key + WINDOW_SUFFIX,
                            key + LAYOUT_SUFFIX,
                            window,
                            spec_version,
                            names,
                            batch.newest[index],
                            batch.records[start * size : end * size],
                            *batch.micros[start:end],
                        )
                    )
                last = group.stop == len(batch.symbols)
                results = self._run_script(calls, event if last else None)
                for written, stale, replaced in results[: len(group)]:
                    summary.written += written
                    summary.stale += stale
                    summary.latest += replaced
                if event is not None and last:
                    summary.event_id = results[-1].decode()
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return summary

    def read(self, symbol: str) -> dict[str, float | str] | None:
        """The stored latest vector of ``symbol`` (None when there is none)."""
        try:
            raw = self.client.hgetall(self.prefix + symbol)
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return _vector(raw) if raw else None

    def read_latest(self, symbols: Sequence[str]) -> pa.Table:
        """The latest vectors of many symbols, in one round trip.

        Returns:
            ``symbol, ts, spec_version`` and the feature columns (the union over the symbols, in
            first-seen order; null where a symbol's vector lacks one), one row per symbol that
            has a vector, in the order asked. Symbols with no vector are left out.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            for symbol in symbols:
                pipe.hgetall(self.prefix + symbol)
            raws = pipe.execute()
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        found = [(s, _vector(raw)) for s, raw in zip(symbols, raws, strict=True) if raw]
        columns: dict[str, None] = {}
        for _, vector in found:
            columns |= dict.fromkeys(k for k in vector if k not in ("as_of", "spec_version"))
        times = np.array([v["as_of"][:-1] for _, v in found], dtype="datetime64[us]")
        data = {
            "symbol": pa.array([s for s, _ in found], pa.string()),
            "ts": pa.array(times.astype(np.int64)).cast(UTC_MICROS),
            "spec_version": pa.array([v["spec_version"] for _, v in found], pa.string()),
        }
        for name in columns:
            data[name] = pa.array([v.get(name) for _, v in found], pa.float64())
        return pa.table(data)

    def read_window(self, symbol: str, n: int | None = None) -> pa.Table:
        """The stored window of ``symbol``, oldest first: ``ts`` and the feature columns.

        Args:
            symbol: the symbol.
            n: only the newest ``n`` vectors (all kept ones when None).

        Returns:
            The vectors, with the spec version in the schema metadata (``spec_version``); a
            symbol with no window gives an empty table with only ``ts``.
        """
        if n is not None and n < 1:
            raise UserError(f"online store: n must be 1 or more, not {n}")
        key = self.prefix + symbol
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(key + LAYOUT_SUFFIX)
            pipe.zrange(key + WINDOW_SUFFIX, -n if n else 0, -1)
            layout, records = pipe.execute()
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        if layout is None:
            return pa.table({"ts": pa.array([], UTC_MICROS)})
        spec_version, _, names = layout.decode().partition("\n")
        table = unpack_records(records, names.split(",") if names else [])
        return table.replace_schema_metadata({"spec_version": spec_version})

    def symbols(self) -> list[str]:
        """Every symbol with a latest vector under this store's prefix, sorted.

        Lists the latest hashes with ``SCAN ... TYPE hash`` (never ``KEYS``, which blocks the
        server): about one round trip per thousand keys of the database.
        """
        pattern = _glob_escape(self.prefix) + "*"
        start = len(self.prefix)
        try:
            keys = self.client.scan_iter(match=pattern, count=1000, _type="hash")
            return sorted({key.decode()[start:] for key in keys})
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error

    def latest_times(self, symbols: Sequence[str]) -> pa.Table:
        """The time and spec version of many symbols' latest vectors, in one round trip.

        Returns:
            ``symbol, ts, spec_version``, one row per symbol that has a latest vector, in the
            order asked (the feature values are left in Redis: :meth:`read_latest` reads them).
        """
        calls = [
            ([self.prefix + s for s in symbols[first : first + self.pipeline_size]], [])
            for first in range(0, len(symbols), self.pipeline_size)
        ]
        replies = [v for reply in self._evalsha_all(self._latest_times, calls) for v in reply]
        times, versions = replies[::2], replies[1::2]
        found = [i for i, t in enumerate(times) if t is not None]
        ts = np.array([times[i] for i in found], dtype=f"S{ISO_LENGTH - 1}")  # drops the Z
        return pa.table(
            {
                "symbol": pa.array([symbols[i] for i in found], pa.string()),
                "ts": pa.array(ts.astype("datetime64[us]").astype(np.int64)).cast(UTC_MICROS),
                "spec_version": pa.array([versions[i].decode() for i in found], pa.string()),
            }
        )

    def read_windows(
        self, symbols: Sequence[str], n: int, until: datetime | None = None
    ) -> pa.Table:
        """The newest ``n`` window vectors up to ``until`` of many symbols, in one round trip.

        Args:
            symbols: the symbols.
            n: vectors per symbol, at most.
            until: the newest bar time to take (all stored times when None); a naive time is UTC.

        Returns:
            ``symbol, ts, spec_version`` and the feature columns (the union over the windows'
            layouts, null where a layout lacks one): each symbol's rows together, oldest first,
            in the order asked (grouped by layout first when layouts differ). Symbols with no
            window are left out.
        """
        if n < 1:
            raise UserError(f"online store: n must be 1 or more, not {n}")
        newest = "+inf" if until is None else str(_micros(until))
        calls = []
        for first in range(0, len(symbols), self.pipeline_size):
            keys = []
            for symbol in symbols[first : first + self.pipeline_size]:
                keys += [self.prefix + symbol + LAYOUT_SUFFIX, self.prefix + symbol + WINDOW_SUFFIX]
            calls.append((keys, [newest, n]))
        replies = [v for reply in self._evalsha_all(self._read_windows, calls) for v in reply]
        by_layout: dict[bytes, tuple[list[str], list[int], list[bytes]]] = {}
        for symbol, layout, records in zip(symbols, replies[::2], replies[1::2], strict=True):
            if layout is None or not records:
                continue
            names, counts, chunks = by_layout.setdefault(layout, ([], [], []))
            names.append(symbol)
            counts.append(len(records))
            chunks.extend(reversed(records))
        tables = []
        for layout, (names, counts, chunks) in by_layout.items():
            spec_version, _, columns = layout.decode().partition("\n")
            table = unpack_records(chunks, columns.split(",") if columns else [])
            symbol = pa.array(np.repeat(np.array(names, dtype=object), counts), pa.string())
            version = pa.array([spec_version] * table.num_rows, pa.string())
            tables.append(
                table.add_column(0, "symbol", symbol).add_column(2, "spec_version", version)
            )
        if not tables:
            return pa.table(
                {
                    "symbol": pa.array([], pa.string()),
                    "ts": pa.array([], UTC_MICROS),
                    "spec_version": pa.array([], pa.string()),
                }
            )
        return pa.concat_tables(tables, promote_options="default")

    def publish_event(
        self, as_of: datetime | str, symbols: Sequence[str], spec_version: str
    ) -> str:
        """Appends a batch event (these symbols changed at ``as_of``); returns its stream id.

        A naive ``as_of`` is taken as UTC; text must be ISO-8601.
        """
        fields = self._event_fields(as_of, symbols, spec_version)
        assert fields is not None
        try:
            pipe = self.client.pipeline(transaction=False)
            self._append_event(pipe, fields)
            (event_id,) = pipe.execute()
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return event_id.decode()

    def read_events(self, after: str = "0-0", count: int = 100) -> list[BatchEvent]:
        """Up to ``count`` batch events appended after the event id ``after``, oldest first."""
        try:
            entries = self.client.xrange(self.events_key, min=f"({after}", count=count)
        except redis.ResponseError as error:
            raise UserError(f"read events: after must be an event id like 1-0 ({error})") from None
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return [_event(entry_id, fields) for entry_id, fields in entries]

    def last_event_id(self) -> str:
        """The id of the newest batch event (``0-0`` when there is none)."""
        try:
            newest = self.client.xrevrange(self.events_key, count=1)
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return newest[0][0].decode() if newest else "0-0"

    def wait_events(self, after: str, timeout_s: float, count: int = 100) -> list[BatchEvent]:
        """Batch events after the id ``after``, waiting up to ``timeout_s`` for the first one.

        Returns:
            Up to ``count`` events, oldest first; none when the wait ran out.
        """
        block_ms = max(1, round(timeout_s * 1000))
        try:
            replies = self.client.xread({self.events_key: after}, count=count, block=block_ms)
        except redis.ResponseError as error:
            raise UserError(f"wait events: after must be an event id like 1-0 ({error})") from None
        except redis.RedisError as error:
            raise UserError(f"redis: {error}") from error
        return [_event(entry_id, fields) for _, entries in replies for entry_id, fields in entries]

    def _event_fields(
        self, as_of: datetime | str | None, symbols: Sequence[str], spec_version: str
    ) -> dict[str, str] | None:
        if as_of is None:
            return None
        return {
            "as_of": _event_time(as_of),
            "symbols": json.dumps(list(symbols)),
            "spec_version": spec_version,
        }

    def _append_event(self, pipe: redis.client.Pipeline, fields: dict[str, str]) -> None:
        pipe.xadd(self.events_key, fields, maxlen=self.events_maxlen, approximate=True)

    def _run_script(self, calls: list[tuple], event: dict[str, str] | None) -> list:
        """Runs script calls (and appends an event) in one round trip; their results in order.

        The script is loaded on first use, and again if the server lost it (a restart): the
        calls then run again, which is safe since they are idempotent.
        """
        if not self._script_loaded:
            self.client.script_load(_WRITE_VECTORS)
            self._script_loaded = True
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for args in calls:
                pipe.evalsha(self._script.sha, 3, *args)
            if event is not None:
                self._append_event(pipe, event)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(_WRITE_VECTORS)
        raise AssertionError("unreachable")

    def _evalsha_all(
        self, script: redis.commands.core.Script, calls: list[tuple[list[str], list]]
    ) -> list:
        """Runs a read-only script once per (keys, args) in one round trip; results in order.

        The script is loaded again if the server lost it (a restart), and the calls rerun.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise UserError("redis: the server refused to keep a script") from None
                self.client.script_load(script.script)
            except redis.RedisError as error:
                raise UserError(f"redis: {error}") from error
        raise AssertionError("unreachable")


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> BatchEvent:
    """A batch event from its stream entry."""
    return BatchEvent(
        id=entry_id.decode(),
        as_of=datetime.fromisoformat(fields[b"as_of"].decode()),
        symbols=json.loads(fields[b"symbols"]),
        spec_version=fields[b"spec_version"].decode(),
    )


def _vector(raw: dict[bytes, bytes]) -> dict[str, float | str]:
    """The decoded latest vector: ``as_of``, ``spec_version`` and a float per feature."""
    vector: dict[str, float | str] = {
        "as_of": raw[b"as_of"].decode(),
        "spec_version": raw[b"spec_version"].decode(),
    }
    if b"values" in raw:
        names = raw[b"columns"].decode().split(",") if raw[b"columns"] else []
        values = np.frombuffer(raw[b"values"], dtype="<f8").tolist()
        return vector | dict(zip(names, values, strict=True))
    for key, value in raw.items():  # the form before windows: one text field per feature
        if key not in (b"as_of", b"spec_version"):
            vector[key.decode()] = float(value)
    return vector


def _glob_escape(text: str) -> str:
    """``text`` with the glob characters of a Redis MATCH pattern escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _micros(time: datetime) -> int:
    """Microseconds since the epoch of ``time`` (a naive time is UTC), as window scores are."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return pa.scalar(time.astimezone(UTC), UTC_MICROS).cast(pa.int64()).as_py()


def _event_time(as_of: datetime | str) -> str:
    """The fixed-width ISO-8601 UTC text of an event time (naive times are UTC)."""
    if isinstance(as_of, str):
        try:
            as_of = datetime.fromisoformat(as_of)
        except ValueError:
            raise UserError(f"event as_of: {as_of!r} is not an ISO-8601 time") from None
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return iso_times(pa.array([as_of.astimezone(UTC)], UTC_MICROS))[0]


def online_store(settings: Settings) -> OnlineStore:
    """The configured online store (``redis.pipeline_size`` symbols per round trip)."""
    return OnlineStore(redis_client(settings), pipeline_size=settings.redis.pipeline_size)
