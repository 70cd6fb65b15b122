"""The messages on the platform's topics, in one place: schemas, encoding, decoding, reasons.

Messages are JSON objects with a schema version ``v``, keyed by symbol (so one symbol's
messages stay in order on one partition). Times are ISO-8601 with a zone (``Z`` for UTC);
prices are finite and positive, sizes and volumes finite (sizes positive, volumes not
negative). Unknown fields are ignored, so producers may add fields without a new version.

``ticks`` (trades)::

    {"v": 1, "symbol": "AAPL", "ts": "2024-01-02T14:30:00.125Z", "price": 187.15, "size": 100}

``bars`` (OHLCV; ``ts`` is the bar's open time)::

    {"v": 1, "symbol": "AAPL", "interval": "1m", "ts": "2024-01-02T14:30:00Z",
     "open": 187.1, "high": 187.3, "low": 187.0, "close": 187.15, "volume": 12500}

``predictions`` (written by serving when ``serve.publish_predictions`` is on; ``source``:
``online`` for ``/v1/predict``, where ``ts`` is the scored ``as_of`` and ``rank`` the symbol's
rank in the cross-section; ``features`` for ``/v1/predict/features``, rows the client sent)::

    {"v": 1, "symbol": "AAPL", "ts": "2024-01-02T14:30:00Z", "score": 0.42, "rank": 3,
     "model_name": "sp500-ridge", "model_version": "4", "alias": "champion",
     "source": "online", "predicted_at": "2024-01-02T14:31:00.041Z"}

``ticks`` and ``bars`` may also come in a binary layout (:mod:`._binary_codec`: the same
fields, fixed-width and little-endian, ``ts`` in UTC microseconds, then the symbol; it starts
with ``RB``, which no JSON does). It is about a third of the JSON's size and decodes 5-8x
faster; ``ray-apps stream replay`` writes it unless ``--encoding json``, and consumers read
both, even mixed on one topic. The models judge a binary message's values as they do JSON's.

A message that does not parse or breaks the schema goes to the input topic's dead-letter topic
with its original key and payload, and headers naming the reason (one of :data:`REASONS`), a
detail, and where it came from.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ray_apps.streaming import _arrow_decode, _binary_codec

#: The schema version producers write and consumers accept.
SCHEMA_VERSION = 1

Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]


class TickMessage(BaseModel):
    """One trade on the ``ticks`` topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    symbol: Symbol
    ts: AwareDatetime
    price: Price
    size: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class BarMessage(BaseModel):
    """One OHLCV bar on the ``bars`` topic (``ts``: the bar's open time)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    symbol: Symbol
    interval: Annotated[str, Field(pattern=r"^[1-9][0-9]*(s|m|h|d|w)$")]
    ts: AwareDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PredictionMessage(BaseModel):
    """One answered score on the ``predictions`` topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    symbol: Symbol
    ts: AwareDatetime
    score: Annotated[float, Field(allow_inf_nan=False)]
    rank: int | None = None
    model_name: str
    model_version: str
    alias: str
    source: Literal["online", "features"]
    predicted_at: AwareDatetime


MessageKind = Literal["ticks", "bars"]
Encoding = Literal["json", "binary"]
"""How producers write ``ticks`` and ``bars``: JSON text, or the binary layout of
:mod:`._binary_codec` (a third of the size, decoded 5-8x faster); consumers read both."""
MODELS: dict[MessageKind, type[BaseModel]] = {"ticks": TickMessage, "bars": BarMessage}

#: Why a message became a dead letter. The bar rules of ingest validation
#: (``features.bar_checks.VALUE_REASONS``, e.g. ``high_below_low``) are reasons too.
REASONS = (
    "unparseable",  # not JSON, or not a JSON object
    "unknown_schema_version",  # ``v`` missing or not one this consumer reads
    "missing_field",
    "bad_type",  # a field of the wrong type (text for a number, a time without a zone...)
    "non_positive_price",  # or not finite
    "non_positive_size",  # or not finite
    "negative_volume",  # or not finite
    "bad_field",  # any other field that breaks the schema (empty symbol, unknown interval...)
    "late",  # behind the symbol's last bar by more than ``stream.late_tolerance_s``
)


@dataclass(frozen=True)
class DeadLetter:
    """A message refused by a consumer, and why."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter message (its value is the original payload)."""
        return [
            ("reason", self.reason.encode()),
            ("detail", self.detail.encode()),
            ("source_topic", self.topic.encode()),
            ("source_partition", str(self.partition).encode()),
            ("source_offset", str(self.offset).encode()),
        ]


def parse(kind: MessageKind, payload: bytes | None) -> BaseModel | tuple[str, str]:
    """One message as its model, or ``(reason, detail)`` when it breaks the schema."""
    model = MODELS[kind]
    if _binary_codec.is_binary(payload):
        fields = _binary_codec.unpack(kind, payload)
        if isinstance(fields, tuple):
            return fields
        try:
            return model.model_validate({"v": SCHEMA_VERSION, **fields})
        except ValidationError as error:
            return _reason(error)
    try:
        return model.model_validate_json(payload or b"")
    except ValidationError as error:
        return _reason(error, payload or b"")


def _reason(error: ValidationError, text: bytes | None = None) -> tuple[str, str]:
    """The reason (and a one-line detail) for the first problem of a refused message.

    Args:
        error: what the model said.
        text: the payload when it was read as JSON (None for a binary record).
    """
    problems = error.errors(include_url=False, include_input=False)
    if text is not None and (
        any(p["type"] == "json_invalid" for p in problems) or _not_object(text)
    ):
        return "unparseable", "not a JSON object"
    version = [p for p in problems if p["loc"][:1] == ("v",)]
    if version:
        return "unknown_schema_version", f"v must be {SCHEMA_VERSION}"
    first = problems[0]
    field = ".".join(str(part) for part in first["loc"])
    detail = f"{field}: {first['msg']}"
    if first["type"] == "missing":
        return "missing_field", detail
    if first["type"].endswith(("_type", "_parsing", "timezone_aware")):
        return "bad_type", detail
    if field in ("open", "high", "low", "close", "price"):
        return "non_positive_price", detail
    if field == "size":
        return "non_positive_size", detail
    if field == "volume":
        return "negative_volume", detail
    return "bad_field", detail


def _not_object(payload: bytes) -> bool:
    try:
        return not isinstance(json.loads(payload), dict)
    except ValueError:
        return True


def encode_bars(bars: pa.Table, encoding: Encoding = "json") -> list[bytes]:
    """``bars`` messages for the rows of a bar table (``BAR_COLUMNS``), in row order.

    Raises:
        UserError: a symbol or interval the binary layout cannot hold.
    """
    if encoding == "binary":
        prices = ("open", "high", "low", "close", "volume")
        return _binary_codec.encode(
            "bars",
            bars.column("symbol").to_pylist(),
            {
                "ts": _micros(bars.column("ts")),
                **{c: bars.column(c).to_numpy().astype(np.float64) for c in prices},
            },
            bars.column("interval").to_pylist(),
        )
    times = _iso_times(bars.column("ts"))
    columns = [bars.column(c).to_pylist() for c in ("symbol", "interval")]
    prices = [bars.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
    return [
        (
            f'{{"v":{SCHEMA_VERSION},"symbol":{json.dumps(symbol)},"interval":"{interval}",'
            f'"ts":"{ts}","open":{_number(o)},"high":{_number(h)},"low":{_number(lo)},'
            f'"close":{_number(c)},"volume":{_number(v)}}}'
        ).encode()
        for symbol, interval, ts, o, h, lo, c, v in zip(*columns, times, *prices, strict=True)
    ]


def encode_ticks(
    symbols: Sequence[str],
    ts: pa.Array | pa.ChunkedArray,
    price: np.ndarray,
    size: np.ndarray,
    encoding: Encoding = "json",
) -> list[bytes]:
    """``ticks`` messages, one per trade, in the given order.

    Raises:
        UserError: a symbol the binary layout cannot hold.
    """
    if encoding == "binary":
        fields = {"ts": _micros(ts), "price": price, "size": size}
        return _binary_codec.encode("ticks", symbols, fields)
    times = _iso_times(ts)
    return [
        (
            f'{{"v":{SCHEMA_VERSION},"symbol":{json.dumps(symbol)},"ts":"{t}",'
            f'"price":{_number(p)},"size":{_number(s)}}}'
        ).encode()
        for symbol, t, p, s in zip(symbols, times, price.tolist(), size.tolist(), strict=True)
    ]


def _micros(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _iso_times(ts: pa.Array | pa.ChunkedArray) -> list[str]:
    micros = _micros(ts)
    return [f"{t}Z" for t in np.datetime_as_string(micros.astype("datetime64[us]"), unit="us")]


def _number(value: Any) -> str:
    """A JSON number; NaN, infinities and nulls as JSON ``null`` (which the schema refuses)."""
    if value is None or not math.isfinite(value):
        return "null"
    return repr(float(value))


class RawMessage(NamedTuple):
    """One consumed Kafka message, as the consumer hands it to :func:`decode_batch`.

    A named tuple: the consumer makes one per message, and a tuple is the cheapest to make.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True)
class DecodedBatch:
    """The accepted messages of a batch as one table (input order), and the refused ones."""

    table: pa.Table
    dead: list[DeadLetter]


#: Columns of a decoded batch of each kind (message fields, then where each came from).
DECODED_SCHEMAS: dict[MessageKind, pa.Schema] = {
    "bars": pa.schema(
        [
            ("symbol", pa.string()),
            ("interval", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            *((name, pa.float64()) for name in ("open", "high", "low", "close", "volume")),
            ("offset", pa.int64()),
            ("timestamp_ms", pa.int64()),
        ]
    ),
    "ticks": pa.schema(
        [
            ("symbol", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("price", pa.float64()),
            ("size", pa.float64()),
            ("offset", pa.int64()),
            ("timestamp_ms", pa.int64()),
        ]
    ),
}


def decode_batch(kind: MessageKind, messages: Sequence[RawMessage]) -> DecodedBatch:
    """Decode a micro-batch: the valid messages as one table, the others as dead letters.

    Verdicts, reasons and values are those of :func:`parse` on each message. numpy checks
    accept the plainly valid binary records of the batch at once, then Arrow's JSON reader and
    column checks the plainly valid JSON ones; every message neither accepts (and any block
    Arrow cannot read) gets :func:`parse`.

    Args:
        kind: ``bars`` or ``ticks``.
        messages: the consumed messages, in order.

    Returns:
        The accepted messages in input order (``DECODED_SCHEMAS[kind]``) and the refused ones.
    """
    schema = DECODED_SCHEMAS[kind]
    values = [m.value or b"" for m in messages]
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    data = np.frombuffer(b"".join(values), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    decided, binary = _binary_codec.decode(kind, data, starts, lengths)
    fast_rows = [np.flatnonzero(decided)]
    columns = pa.table({name: column for name, column in binary.items() if name != "ts"})
    fast_tables = [_fast_table(kind, columns.filter(pa.array(decided)), binary["ts"][decided])]
    if not decided.all():
        # only ``{...}`` on one line goes to Arrow's line reader (a bare ``null`` line crashes
        # pyarrow 25's); every other payload is left to ``parse``
        plain = np.flatnonzero(_one_json_line(data, starts, lengths) & ~decided).tolist()
        for rows, table in _readable_blocks(kind, [values[i] for i in plain], plain):
            ok, times = _arrow_decode.accepted(kind, table)
            fast_rows.append(rows[ok])
            fast_tables.append(_fast_table(kind, table.filter(ok), times[ok]))
            decided[rows[ok]] = True
    slow_rows: list[int] = []
    slow_models: list[BaseModel] = []
    dead: list[DeadLetter] = []
    for i in np.flatnonzero(~decided).tolist():
        message = messages[i]
        verdict = parse(kind, message.value)
        if isinstance(verdict, tuple):
            dead.append(
                DeadLetter(
                    verdict[0],
                    verdict[1],
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                )
            )
        else:
            slow_rows.append(i)
            slow_models.append(verdict)
    fast_tables.append(_model_table(kind, slow_models))
    fast_rows.append(np.asarray(slow_rows, dtype=np.int64))
    rows = np.concatenate(fast_rows)
    fields = pa.concat_tables(fast_tables)
    if np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        fields = fields.take(pa.array(order))
        rows = rows[order]
    offsets = np.array([m.offset for m in messages], dtype=np.int64)[rows]
    stamps = np.array([m.timestamp_ms for m in messages], dtype=np.int64)[rows]
    table = fields.append_column("offset", pa.array(offsets)).append_column(
        "timestamp_ms", pa.array(stamps)
    )
    return DecodedBatch(table=table.cast(schema), dead=dead)


def _one_json_line(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which payloads are ``{...}`` without line breaks."""
    if not data.size:
        return np.zeros(len(starts), dtype=bool)
    ends = starts + lengths
    first = data[np.minimum(starts, data.size - 1)]
    last = data[np.maximum(ends - 1, 0)]
    plain = (lengths > 0) & (first == 0x7B) & (last == 0x7D)
    breaks = np.flatnonzero((data == 0x0A) | (data == 0x0D))
    plain[np.searchsorted(ends, breaks, side="right")] = False
    return plain


_SMALLEST_BLOCK = 8


def _readable_blocks(
    kind: MessageKind, payloads: list[bytes], rows: list[int]
) -> list[tuple[np.ndarray, pa.Table]]:
    """Arrow tables of the payloads, halving a block Arrow cannot read down to a few rows."""
    if not payloads:
        return []
    table = _arrow_decode.read_block(kind, payloads)
    if table is not None:
        return [(np.asarray(rows, dtype=np.int64), table)]
    if len(payloads) <= _SMALLEST_BLOCK:
        return []
    half = len(payloads) // 2
    return _readable_blocks(kind, payloads[:half], rows[:half]) + _readable_blocks(
        kind, payloads[half:], rows[half:]
    )


def _fast_table(kind: MessageKind, table: pa.Table, times: np.ndarray) -> pa.Table:
    names = [f.name for f in DECODED_SCHEMAS[kind] if f.name not in ("offset", "timestamp_ms")]
    columns = [
        pa.array(times, pa.timestamp("us", tz="UTC")) if name == "ts" else table.column(name)
        for name in names
    ]
    return pa.table(columns, names=names)


def _model_table(kind: MessageKind, models: list[BaseModel]) -> pa.Table:
    fields = [f for f in DECODED_SCHEMAS[kind] if f.name not in ("offset", "timestamp_ms")]
    columns = [
        pa.array([_utc_micros(m.ts) for m in models], pa.int64()).cast(f.type)
        if f.name == "ts"
        else pa.array([getattr(m, f.name) for m in models], f.type)
        for f in fields
    ]
    return pa.table(columns, schema=pa.schema(fields))


_EPOCH = dt.datetime(1970, 1, 1)


def _utc_micros(ts: dt.datetime) -> int:
    """An aware time as UTC microseconds (also past year 9999 once in UTC)."""
    local = ts.replace(tzinfo=None) - _EPOCH - (ts.utcoffset() or dt.timedelta(0))
    return local // dt.timedelta(microseconds=1)
