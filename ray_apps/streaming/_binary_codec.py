"""The binary layout of ``ticks`` and ``bars`` messages: fixed fields, then the symbol.

A binary message is a little-endian record of the kind's :data:`LAYOUTS` entry followed by the
symbol's UTF-8 bytes; it starts with :data:`MAGIC`, which no JSON text does, so a topic may
carry both encodings. Times are UTC microseconds since the epoch. Bars::

    magic "RB" | layout version u8 (1) | symbol bytes u8 | interval 12 bytes ASCII, NUL-padded
    | ts i64 | open f64 | high f64 | low f64 | close f64 | volume f64 | symbol

and ticks::

    magic "RB" | layout version u8 (1) | symbol bytes u8 | 4 zero bytes
    | ts i64 | price f64 | size f64 | symbol

Decoding, like :mod:`._arrow_decode`, only ever *accepts*: :func:`decode` takes every plainly
valid record of a micro-batch at once with numpy; :func:`unpack` reads one record into the
fields its message model validates, for the messages the vectorized check did not take.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ray_apps.errors import UserError
from ray_apps.streaming._arrow_decode import _NOT_NEGATIVE, _POSITIVE

MAGIC = b"RB"
LAYOUT_VERSION = 1
_HEAD = [("magic", "S2"), ("version", "u1"), ("symbol_bytes", "u1")]
LAYOUTS: dict[str, np.dtype] = {
    "bars": np.dtype(
        [
            *_HEAD,
            ("interval", "S12"),
            ("ts", "<i8"),
            *((name, "<f8") for name in ("open", "high", "low", "close", "volume")),
        ]
    ),
    "ticks": np.dtype([*_HEAD, ("pad", "V4"), ("ts", "<i8"), ("price", "<f8"), ("size", "<f8")]),
}
"""Each kind's fixed fields, in order, without padding; the symbol follows them."""
_MAX_SYMBOL_BYTES = 64  # the schema's longest symbol
_INTERVAL = re.compile(r"[1-9][0-9]*[smhdw]")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: UTC microseconds of 0001-01-01 and of the last microsecond of 9999 (what the models take).
_FIRST_US = (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_LAST_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - _EPOCH) // (
    dt.timedelta(microseconds=1)
)


def encode(
    kind: str, symbols: Sequence[str], fields: dict[str, np.ndarray], interval: Sequence[str] = ()
) -> list[bytes]:
    """Binary messages, one per row.

    Args:
        kind: ``bars`` or ``ticks``.
        symbols: each row's symbol.
        fields: the layout's numeric fields (``ts`` as UTC microseconds), one array each.
        interval: each bar's interval (bars only).

    Raises:
        UserError: a symbol over 255 UTF-8 bytes or an interval over 12 ASCII characters,
            which the layout cannot hold (JSON can).
    """
    layout = LAYOUTS[kind]
    names = [s.encode() for s in symbols]
    records = np.zeros(len(names), dtype=layout)
    records["magic"] = MAGIC
    records["version"] = LAYOUT_VERSION
    lengths = np.fromiter(map(len, names), np.int64, len(names))
    if lengths.size and lengths.max() > 255:
        raise UserError(
            f"binary {kind}: symbol {symbols[int(lengths.argmax())]!r} is over 255 bytes; "
            "use --encoding json"
        )
    records["symbol_bytes"] = lengths
    if kind == "bars":
        text = np.asarray(interval, dtype=object).astype(str)
        if any(len(t) > 12 or not t.isascii() for t in set(text.tolist())):
            raise UserError(
                f"binary bars: an interval of {sorted(set(text.tolist()))} is not ASCII of at "
                "most 12 characters; use --encoding json"
            )
        records["interval"] = text.astype("S12")
    for name, values in fields.items():
        records[name] = values
    size = layout.itemsize
    raw = records.tobytes()
    return [raw[i * size : (i + 1) * size] + name for i, name in enumerate(names)]


def is_binary(payload: bytes | None) -> bool:
    """Whether a payload is in the binary layout (else it is meant as JSON)."""
    return payload is not None and payload[:2] == MAGIC


def decode(
    kind: str, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which payloads of a batch are plainly valid binary records, and their fields.

    Args:
        kind: ``bars`` or ``ticks``.
        data: the batch's payloads one after another, as bytes.
        starts: where each payload starts in ``data``.
        lengths: each payload's length.

    Returns:
        One flag per payload, and the fields of every payload (meaningful where flagged):
        ``symbol`` (and ``interval``) as Arrow strings, ``ts`` in UTC microseconds, numbers as
        float64 arrays.
    """
    layout = LAYOUTS[kind]
    size = layout.itemsize
    n = len(starts)
    ok = lengths > size
    padded = np.concatenate((data, np.zeros(size, dtype=np.uint8)))
    at = np.where(ok, starts, 0)
    records = padded[at[:, None] + np.arange(size)].view(layout).reshape(n)
    symbol_bytes = records["symbol_bytes"].astype(np.int64)
    ok &= records["magic"] == MAGIC
    ok &= records["version"] == LAYOUT_VERSION
    ok &= (lengths == size + symbol_bytes) & (symbol_bytes <= _MAX_SYMBOL_BYTES)
    for name in _POSITIVE[kind]:
        ok &= np.isfinite(records[name]) & (records[name] > 0)
    for name in _NOT_NEGATIVE[kind]:
        ok &= np.isfinite(records[name]) & (records[name] >= 0)
    ts = records["ts"]
    ok &= (ts >= _FIRST_US) & (ts <= _LAST_US)
    taken = np.where(ok, symbol_bytes, 0)
    ends = np.cumsum(taken)
    text = padded[np.repeat(at + size - (ends - taken), taken) + np.arange(ends[-1] if n else 0)]
    # printable ASCII without spaces, as the JSON fast path takes (a subset of the schema's)
    odd = (text < 0x21) | (text > 0x7E)
    ok &= np.bincount(np.repeat(np.arange(n), taken)[odd], minlength=n) == 0
    offsets = np.concatenate(([0], ends)).astype(np.int32)
    columns: dict[str, Any] = {
        "symbol": pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text)),
        "ts": ts.copy(),
        **{name: records[name].copy() for name in (*_POSITIVE[kind], *_NOT_NEGATIVE[kind])},
    }
    if kind == "bars":
        intervals = records["interval"]
        if n and np.all(intervals == intervals[0]):  # one interval: the usual batch
            codes, index = intervals[:1], np.zeros(n, dtype=np.int64)
        else:
            codes, index = np.unique(intervals, return_inverse=True)
        names = [_interval(code) for code in codes.tolist()]
        ok &= np.array([name is not None for name in names], dtype=bool)[index]
        columns["interval"] = pa.array([name or "" for name in names], pa.string()).take(
            pa.array(index)
        )
    return ok, columns


def _interval(code: bytes) -> str | None:
    try:
        text = code.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _INTERVAL.fullmatch(text) else None


def unpack(kind: str, payload: bytes) -> dict[str, Any] | tuple[str, str]:
    """One binary message as the fields its model validates (but ``v``), or ``(reason, detail)``.

    The layout's own faults are reasons here (a short or long record, an unknown layout
    version, text that is not UTF-8, a time out of range); the model judges the values.
    """
    layout = LAYOUTS[kind]
    size = layout.itemsize
    if len(payload) < size:
        return "unparseable", f"binary {kind} message of {len(payload)} bytes, under {size}"
    record = np.frombuffer(payload[:size], dtype=layout)[0]
    if record["version"] != LAYOUT_VERSION:
        return "unknown_schema_version", f"binary layout version must be {LAYOUT_VERSION}"
    if len(payload) != size + int(record["symbol_bytes"]):
        return "unparseable", (
            f"binary {kind} message of {len(payload)} bytes; its header says "
            f"{size + int(record['symbol_bytes'])}"
        )
    values = (*_POSITIVE[kind], *_NOT_NEGATIVE[kind])
    fields: dict[str, Any] = {name: float(record[name]) for name in values}
    try:
        fields["symbol"] = payload[size:].decode()
    except UnicodeDecodeError:
        return "bad_field", "symbol: not UTF-8 text"
    if kind == "bars":
        try:
            fields["interval"] = record["interval"].decode("ascii")
        except UnicodeDecodeError:
            return "bad_field", "interval: not ASCII text"
    try:
        fields["ts"] = _EPOCH + dt.timedelta(microseconds=int(record["ts"]))
    except OverflowError:
        return "bad_field", f"ts: {int(record['ts'])} microseconds is out of range"
    return fields
