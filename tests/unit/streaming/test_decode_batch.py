"""``decode_batch`` (binary and Arrow fast paths + per-message fallback) against ``parse``.

Batches mix JSON and binary payloads, good and odd; the binary ones are packed here with
``struct`` from the layout the messages module documents.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import struct

import pyarrow as pa
import pytest

from ray_apps.streaming.messages import RawMessage, decode_batch, encode_bars, parse

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GOOD_TIMES = [
    "2024-01-02T14:30:00Z",
    "2024-01-02T14:30:00.125Z",
    "2024-02-29T23:59:59.999999+05:30",
    "1999-12-31T23:00:00-01:00",
    "2024-01-02T14:30:00.1Z",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-05:00",
    "2024-01-02T14:30:00+23:59",
]
ODD_TIMES = [
    "2024-01-02 14:30:00Z",
    "2024-01-02T14:30:00",
    "2024-02-30T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-01-02T24:00:00Z",
    "2024-01-02T23:59:60Z",
    "2024-01-02T14:30:00+24:00",
    "0000-01-01T00:00:00Z",
    "2024-01-02T14:30:00.1234567Z",
    "2024-01-02T14:30:00z",
    "2024-01-02",
    "2024-13-01T00:00:00Z",
    "2024-01-02T14:30:00+0100",
    "",
    "yesterday",
    1700000000,
    1.7e9,
    None,
    True,
    "2024-01-02T14:30Z",
    "2024-01-02T14:30:00-00:00",
    "  2024-01-02T14:30:00Z",
    "2024-01-02T14:30:00Z ",
]
ODD_NUMBERS = [
    0,
    -1,
    -0.0,
    1e-320,
    1e400,
    "NaN",
    "Infinity",
    "-Infinity",
    "1.5",
    "abc",
    None,
    True,
    False,
    [],
    {},
    10**30,
    5,
]
ODD_SYMBOLS = [
    "",
    " ",
    "A B",
    "A\u00a0B",
    "ÄBC",
    "x" * 64,
    "x" * 65,
    "A\tB",
    5,
    None,
    "A\n",
    "\u2003",
]
ODD_V = [0, 2, 1.0, "1", True, None, -1]
ODD_INTERVALS = ["1m", "15m", "0m", "1x", "m", "01m", "1M", "1m\n", 1, None, "", "1h ", "100d"]


def _good(kind: str, rng: random.Random) -> dict:
    message = {
        "v": 1,
        "symbol": rng.choice(["AAPL", "BTC-USD", "SYN0001", "x"]),
        "ts": rng.choice(GOOD_TIMES),
    }
    if kind == "ticks":
        return message | {"price": rng.uniform(0.01, 500), "size": rng.choice([1, 0.5, 100.25])}
    low = rng.uniform(1, 100)
    return message | {
        "interval": rng.choice(["1m", "15m", "1d", "30s"]),
        "open": low * 1.01,
        "high": low * 1.05,
        "low": low,
        "close": low * 1.02,
        "volume": rng.choice([0, 12.5, 10**6]),
    }


def _packed(kind: str, message: dict, symbol: bytes, ts: int) -> bytes:
    """The binary layout of the messages module's docstring, written with ``struct``."""
    if kind == "bars":
        head = struct.pack("<2sBB12s", b"RB", 1, len(symbol) % 256, message["interval"])
        prices = [message[k] for k in ("open", "high", "low", "close", "volume")]
        return head + struct.pack("<q5d", ts, *prices) + symbol
    head = struct.pack("<2sBB4x", b"RB", 1, len(symbol) % 256)
    return head + struct.pack("<q2d", ts, message["price"], message["size"]) + symbol


BINARY_ODDITIES = {
    "symbol": ["", " ", "A B", "ÄBC", "x" * 64, "x" * 65, "A\tB", "\u2003"],
    "interval": [b"0m", b"1x", b"", b"1M", b"1m\x00x", b"\xff1m", b"999999999999"],
    "ts": [-(2**63), 2**63 - 1, -62135596800_000_001, -62135596800_000_000, 253402300800_000_000],
    "number": [0.0, -1.0, -0.0, 1e-320, math.inf, -math.inf, math.nan],
}
_BYTE_ODDITIES = [
    lambda data: data[:20],
    lambda data: data[:2],
    lambda data: data + b"x",
    lambda data: data[:-1],
    lambda data: data[:2] + b"\x02" + data[3:],
    lambda data: data[:3] + b"\xff" + data[4:],
    lambda data: data[:-1] + b"\xff",
]


def _binary_payload(kind: str, rng: random.Random) -> bytes:
    message = _good(kind, rng)
    if kind == "bars":
        message["interval"] = message["interval"].encode()
    symbol = message["symbol"]
    ts = (dt.datetime.fromisoformat(message["ts"]) - EPOCH) // dt.timedelta(microseconds=1)
    if rng.random() < 0.5:
        return _packed(kind, message, symbol.encode(), ts)
    field = rng.choice([f for f in message if f != "v"])
    if field == "symbol":
        symbol = rng.choice(BINARY_ODDITIES["symbol"])
    elif field == "ts":
        ts = rng.choice(BINARY_ODDITIES["ts"])
    elif field == "interval":
        message["interval"] = rng.choice(BINARY_ODDITIES["interval"])
    else:
        message[field] = rng.choice(BINARY_ODDITIES["number"])
    data = _packed(kind, message, symbol.encode(), ts)
    return rng.choice(_BYTE_ODDITIES)(data) if rng.random() < 0.3 else data


def _payload(kind: str, rng: random.Random) -> bytes | None:
    if rng.random() < 0.4:
        return _binary_payload(kind, rng)
    message = _good(kind, rng)
    roll = rng.random()
    if roll < 0.55:
        return json.dumps(message).encode()
    fields = list(message)
    field = rng.choice(fields)
    odd = {"ts": ODD_TIMES, "symbol": ODD_SYMBOLS, "v": ODD_V, "interval": ODD_INTERVALS}
    choice = rng.random()
    if choice < 0.6:
        message[field] = rng.choice(odd.get(field, ODD_NUMBERS))
    elif choice < 0.7:
        del message[field]
    elif choice < 0.75:
        message["extra"] = rng.choice([{"a": [1, None]}, "\u0000", 1e300, "ünïcode"])
    else:
        return rng.choice(_RAW_ODDITIES)(json.dumps(message, allow_nan=True))
    return json.dumps(message, allow_nan=True).encode()


_RAW_ODDITIES = [
    lambda text: None,
    lambda text: b"",
    lambda text: b"   ",
    lambda text: text.encode() + b"\n",
    lambda text: text.replace(",", ",\n", 1).encode(),
    lambda text: text.replace(",", ",\r", 1).encode(),
    lambda text: (text + text).encode(),
    lambda text: (text[:-1] + ",}").encode(),
    lambda text: text.replace('"', "'").encode(),
    lambda text: b"[" + text.encode() + b"]",
    lambda text: text.encode()[:-3],
    lambda text: (text[:-1] + ', "x": "\xff"}').encode("latin-1"),
    lambda text: (text[:-1] + ', "x": "\\ud800"}').encode(),
    lambda text: (text[:-1] + ', "price": -5, "open": -5}').encode(),
    lambda text: ("\ufeff" + text).encode(),
    lambda text: ("/*c*/" + text).encode(),
    lambda text: b"42",
    lambda text: b"null",
    lambda text: text.replace(":", " : ").encode(),
]


def _expected_row(kind: str, model) -> dict:
    row = model.model_dump()
    del row["v"]
    row["ts"] = (model.ts - EPOCH) // dt.timedelta(microseconds=1)
    return row


@pytest.mark.parametrize("kind", ["bars", "ticks"])
@pytest.mark.parametrize("seed", range(6))
def test_decode_batch_agrees_with_parse_message_by_message(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    payloads = [_payload(kind, rng) for _ in range(rng.choice([1, 7, 300, 3000]))]
    messages = [
        RawMessage(kind, 3, 100 + i, b"k", value, 1_700_000_000_000 + i)
        for i, value in enumerate(payloads)
    ]
    decoded = decode_batch(kind, messages)

    verdicts = [parse(kind, value) for value in payloads]
    accepted = [(i, v) for i, v in enumerate(verdicts) if not isinstance(v, tuple)]
    refused = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, tuple)]
    table = decoded.table
    assert table.column("offset").to_pylist() == [100 + i for i, _ in accepted]
    assert table.column("timestamp_ms").to_pylist() == [1_700_000_000_000 + i for i, _ in accepted]
    fields = table.drop_columns(["offset", "timestamp_ms"])
    ts = fields.schema.get_field_index("ts")
    # as microseconds: a time late on 9999-12-31 with a negative offset is past Python's years
    rows = fields.set_column(ts, "ts", fields.column("ts").cast(pa.int64())).to_pylist()
    assert rows == [_expected_row(kind, model) for _, model in accepted]
    assert [(d.offset, d.reason, d.detail) for d in decoded.dead] == [
        (100 + i, reason, detail) for i, (reason, detail) in refused
    ]
    assert all(d.value == payloads[d.offset - 100] and d.key == b"k" for d in decoded.dead)
    assert len(accepted) > 0 or len(payloads) < 10
    assert len(refused) > 0 or len(payloads) < 10


def test_an_empty_batch_is_an_empty_table() -> None:
    decoded = decode_batch("bars", [])
    assert decoded.table.num_rows == 0 and decoded.dead == []
    assert decoded.table.column_names == [
        "symbol",
        "interval",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "offset",
        "timestamp_ms",
    ]


def test_binary_records_decode_to_their_fields_and_bad_ones_get_reasons() -> None:
    bar = {"interval": b"15m", "open": 10.0, "high": 10.5, "low": 9.5, "close": 10.25}
    bar["volume"] = 0.0
    ts = 1_704_205_800_125_000  # 2024-01-02T14:30:00.125Z
    good = _packed("bars", bar, b"BTC-USD", ts)
    assert len(good) == 64 + 7
    bad = {
        "unparseable": good[:63],
        "unknown_schema_version": good[:2] + b"\x02" + good[3:],
        "non_positive_price": _packed("bars", bar | {"low": 0.0}, b"BTC-USD", ts),
        "negative_volume": _packed("bars", bar | {"volume": math.nan}, b"BTC-USD", ts),
        "bad_field": _packed("bars", bar, b"BTC USD", ts),
    }
    messages = [
        RawMessage("bars", 0, i, b"k", value, 7) for i, value in enumerate([good, *bad.values()])
    ]
    decoded = decode_batch("bars", messages)
    assert decoded.table.drop_columns(["offset", "timestamp_ms"]).to_pylist() == [
        {
            "symbol": "BTC-USD",
            "interval": "15m",
            "ts": dt.datetime(2024, 1, 2, 14, 30, 0, 125000, tzinfo=dt.UTC),
            **{k: v for k, v in bar.items() if k != "interval"},
        }
    ]
    assert [d.reason for d in decoded.dead] == list(bad)
    tick = struct.pack("<2sBB4xq2d", b"RB", 1, 4, ts, 187.15, 100.0) + b"AAPL"
    assert parse("ticks", tick).model_dump() == {
        "v": 1,
        "symbol": "AAPL",
        "ts": dt.datetime(2024, 1, 2, 14, 30, 0, 125000, tzinfo=dt.UTC),
        "price": 187.15,
        "size": 100.0,
    }


def test_binary_encoding_round_trips_what_json_carries() -> None:
    bars = pa.table(
        {
            "symbol": ["AAPL", "BTC-USD"],
            "interval": ["1m", "1m"],
            "ts": pa.array([0, 1_704_205_800_000_000], pa.timestamp("us", tz="UTC")),
            "open": [1.0, 2.0],
            "high": [1.5, 2.5],
            "low": [0.5, 1.5],
            "close": [1.25, 2.25],
            "volume": [0.0, 3.0],
        }
    )
    tables = [
        decode_batch(
            "bars", [RawMessage("bars", 0, i, None, v, 0) for i, v in enumerate(payloads)]
        ).table
        for payloads in (encode_bars(bars, "json"), encode_bars(bars, "binary"))
    ]
    assert tables[0].equals(tables[1]) and tables[0].num_rows == 2
