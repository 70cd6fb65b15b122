"""The ingest's bar rules on typed arrays, so no engine feeds a bad bar to the kernels.

A NaN, infinite or non-positive price (or a bad volume) fed to a kernel makes every later value
of that symbol NaN, for good in a long-running incremental engine. Every engine therefore
checks its input with :func:`bar_verdicts` first: the ingest's own value rules
(:func:`ray_apps.marketdata.validation.value_rules`, one definition), in the same order and
under the same reason names (a bar gets the first rule it fails), on typed arrays.
:func:`compiled_verdicts` gives the same codes in one compiled pass, for the incremental
engine's micro-batches (where a dozen array operations per batch would cost more than the
features); a unit test holds it to :func:`bar_verdicts` on every rule.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from ray_apps.marketdata.validation import REASONS, value_rules

#: The reasons a typed bar can fail, in rule order: the quarantine's, less those about the
#: raw file (its columns and interval text) and the ingest's duplicate rule.
VALUE_REASONS = tuple(
    r for r in REASONS if r not in ("unknown_column", "invalid_interval", "duplicate_symbol_ts")
)
_REASON_NAMES = np.array(["", *VALUE_REASONS], dtype=object)
_CODE = {reason: code for code, reason in enumerate(_REASON_NAMES)}
#: The codes :func:`compiled_verdicts` gives, in the value rules' order.
_COMPILED_RULES = np.array(
    [
        _CODE[reason]
        for reason in (
            "non_finite_price",
            "non_positive_price",
            "non_finite_volume",
            "negative_volume",
            "high_below_open_close",
            "low_above_open_close",
        )
    ],
    dtype=np.int8,
)
#: The code of a bar without a symbol.
MISSING_SYMBOL = _CODE["missing_symbol"]


def bar_verdicts(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    open_: np.ndarray | None = None,
    missing_symbol: np.ndarray | None = None,
    missing_ts: np.ndarray | None = None,
) -> np.ndarray:
    """The first rule each bar fails, as a code (0: the bar is good).

    Args:
        high: high prices.
        low: low prices.
        close: close prices.
        volume: volumes.
        open_: open prices; without them the OHLC rules compare high and low with the close.
        missing_symbol: bars without a symbol.
        missing_ts: bars without a time.

    Returns:
        int8 codes; :func:`reason_counts` names them.
    """
    high, low, close, volume = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    opened = close if open_ is None else np.asarray(open_, dtype=np.float64)
    code = np.zeros(close.shape[0], dtype=np.int8)

    def flag(failed: np.ndarray, reason: str) -> None:
        code[(code == 0) & failed] = _CODE[reason]

    if missing_symbol is not None:
        flag(np.asarray(missing_symbol, dtype=bool), "missing_symbol")
    if missing_ts is not None:
        flag(np.asarray(missing_ts, dtype=bool), "unparseable_ts")
    for failed, reason, _ in value_rules(opened, high, low, close, volume):
        flag(failed, reason)
    return code


def compiled_verdicts(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    open_: np.ndarray,
    codes: np.ndarray,
) -> None:
    """:func:`bar_verdicts`' codes in one compiled pass, written into ``codes``.

    Args:
        high: high prices, contiguous float64 (as every argument).
        low: low prices.
        close: close prices.
        volume: volumes.
        open_: open prices (pass ``close`` when unknown, as :func:`bar_verdicts` does).
        codes: int8 codes to fill in place; bars already given a code (for example
            :data:`MISSING_SYMBOL`) keep it.
    """
    _first_failed(open_, high, low, close, volume, _COMPILED_RULES, codes)


@njit(cache=True, nogil=True)
def _first_failed(open_, high, low, close, volume, rules, codes):
    """The value rules of ``marketdata.validation.value_rules``, first failed per bar."""
    for i in range(close.shape[0]):
        if codes[i] != 0:
            continue
        o, h, lo, c, v = open_[i], high[i], low[i], close[i], volume[i]
        if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c)):
            codes[i] = rules[0]
        elif o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
            codes[i] = rules[1]
        elif not math.isfinite(v):
            codes[i] = rules[2]
        elif v < 0.0:
            codes[i] = rules[3]
        elif h < max(o, c):
            codes[i] = rules[4]
        elif lo > min(o, c):
            codes[i] = rules[5]


def reason_counts(codes: np.ndarray) -> dict[str, int]:
    """Bars per failed rule (good bars are not counted)."""
    values, counts = np.unique(codes[codes != 0], return_counts=True)
    return {str(_REASON_NAMES[v]): int(n) for v, n in zip(values, counts, strict=True)}


def reason_names(codes: np.ndarray) -> np.ndarray:
    """Each bar's failed rule by name (empty text for a good bar)."""
    return _REASON_NAMES[codes]


def check_bars(bars: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Splits bars into the good ones and counts of the bad ones by reason.

    Args:
        bars: symbol, ts, high, low, close, volume and optionally open.

    Returns:
        The good bars (the input itself when all are good) and the rejected bars per reason.
    """
    if bars.num_rows == 0:
        return bars, {}
    columns = {c: float_column(bars, c) for c in ("high", "low", "close", "volume")}
    if "open" in bars.column_names:
        columns["open_"] = float_column(bars, "open")
    symbol = bars.column("symbol")
    missing_symbol = pc.fill_null(pc.equal(pc.cast(symbol, pa.string()), ""), True)
    codes = bar_verdicts(
        **columns,
        missing_symbol=missing_symbol.to_numpy(zero_copy_only=False),
        missing_ts=bars.column("ts").is_null().to_numpy(zero_copy_only=False),
    )
    if not codes.any():
        return bars, {}
    return bars.filter(pa.array(codes == 0)), reason_counts(codes)


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """The sum of two reason counts."""
    return dict(Counter(total) + Counter(more))


def float_column(bars: pa.Table, column: str) -> np.ndarray:
    """A column as float64, nulls as NaN (which the bar rules then refuse)."""
    values = pc.cast(bars.column(column), pa.float64())
    return pc.fill_null(values, np.nan).to_numpy()
