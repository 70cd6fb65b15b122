"""The vectorized half of batch decoding: Arrow's JSON reader and checks on whole columns.

It only ever *accepts*: a row passes when it is plainly valid (each field of the JSON type
the schema wants, times in one strict ISO-8601 layout, ASCII symbols...). Every other row,
and every block Arrow cannot read, goes back to the caller for the per-message parser, which
gives the verdict and the reason. So a row is accepted here only if the models accept it.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

_PRICE = pa.float64()
#: The fields read from each kind of message, with the JSON types the fast path takes.
READ_SCHEMAS: dict[str, pa.Schema] = {
    "bars": pa.schema(
        [
            ("v", pa.int64()),
            ("symbol", pa.string()),
            ("interval", pa.string()),
            ("ts", pa.string()),
            *((c, _PRICE) for c in ("open", "high", "low", "close", "volume")),
        ]
    ),
    "ticks": pa.schema(
        [
            ("v", pa.int64()),
            ("symbol", pa.string()),
            ("ts", pa.string()),
            ("price", _PRICE),
            ("size", _PRICE),
        ]
    ),
}
_POSITIVE = {"bars": ("open", "high", "low", "close"), "ticks": ("price", "size")}
_NOT_NEGATIVE = {"bars": ("volume",), "ticks": ()}
#: Symbols of printable ASCII without spaces, 1 to 64 characters (a subset of the schema's).
_SYMBOL = r"^[\x21-\x7e]{1,64}$"
_INTERVAL = r"^[1-9][0-9]*(s|m|h|d|w)$"
_TIME = (
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?P<frac>\d{1,6}))?"
    r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<hh>[01]\d|2[0-3]):(?P<mm>[0-5]\d))$"
)
_US_PER_S = 1_000_000


def read_block(kind: str, payloads: list[bytes]) -> pa.Table | None:
    """The payloads (one JSON object each, no line breaks) as a table.

    Returns:
        The table, or None when the block is not UTF-8, Arrow cannot read it, or a payload
        read as other than one row.
    """
    data = b"\n".join(payloads)
    try:
        data.decode()  # Arrow does not check the text of fields it skips; the models do
    except UnicodeDecodeError:
        return None
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=max(len(data) + 1, 1 << 20), use_threads=False),
            parse_options=pj.ParseOptions(
                explicit_schema=READ_SCHEMAS[kind], unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(payloads) else None


def accepted(kind: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are plainly valid, and each row's ``ts`` in UTC microseconds (0 if not)."""
    ok = _filled(pc.equal(table.column("v"), 1))
    ok &= _filled(pc.match_substring_regex(table.column("symbol"), _SYMBOL))
    if kind == "bars":
        ok &= _filled(pc.match_substring_regex(table.column("interval"), _INTERVAL))
    for name in _POSITIVE[kind]:
        values = table.column(name).to_numpy(zero_copy_only=False)
        ok &= np.isfinite(values) & (values > 0)
    for name in _NOT_NEGATIVE[kind]:
        values = table.column(name).to_numpy(zero_copy_only=False)
        ok &= np.isfinite(values) & (values >= 0)
    times, valid_time = utc_micros(table.column("ts"))
    return ok & valid_time, times


def utc_micros(text: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ISO-8601 times ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM)`` as UTC microseconds.

    Returns:
        The times (0 where not valid) and whether each is a valid time in that layout (a
        real calendar date, year 1 or later, hours below 24, minutes and seconds below 60).
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    n = len(text)
    parts = pc.extract_regex(text, _TIME)
    valid = _filled(parts.is_valid())
    if not valid.any():
        return np.zeros(n, dtype=np.int64), valid
    base = pc.utf8_slice_codeunits(pc.fill_null(text, ""), 0, 19)
    fixed = np.array(base.to_numpy(zero_copy_only=False).astype("S19"))
    digits = fixed.view(np.uint8).reshape(n, 19).astype(np.int64) - ord("0")

    def number(first: int, width: int) -> np.ndarray:
        value = np.zeros(n, dtype=np.int64)
        for i in range(first, first + width):
            value = value * 10 + digits[:, i]
        return value

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, second = number(11, 2), number(14, 2), number(17, 2)
    valid &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
    valid &= (hour < 24) & (minute < 60) & (second < 60)
    months = np.where(valid, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    first_day = months.astype("datetime64[D]").astype(np.int64)
    month_days = (months + 1).astype("datetime64[D]").astype(np.int64) - first_day
    valid &= day <= month_days
    micros = _digits(pc.utf8_rpad(_group(parts, "frac"), 6, "0"))
    offset = _digits(_group(parts, "hh")) * 60 + _digits(_group(parts, "mm"))
    sign = np.where(_filled(pc.equal(_group(parts, "sign"), "-")), -1, 1)
    seconds = (first_day + day - 1) * 86400 + hour * 3600 + minute * 60 + second
    seconds -= sign * offset * 60
    times = np.where(valid, seconds * _US_PER_S + micros, 0)
    return times.astype(np.int64), valid


def _group(parts: pa.Array, name: str) -> pa.Array:
    """One named group of ``extract_regex``'s result, empty text where it did not match."""
    return pc.fill_null(pc.struct_field(parts, name), "")


def _digits(text: pa.Array) -> np.ndarray:
    """Text of decimal digits as int64, empty text as 0."""
    numbers = pc.cast(pc.if_else(pc.equal(text, ""), "0", text), pa.int64())
    return np.asarray(numbers.to_numpy(zero_copy_only=False), dtype=np.int64)


def _filled(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow column as numpy, nulls as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
