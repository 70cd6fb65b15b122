"""The indicator arithmetic, written once as a per-bar state update and compiled with numba.

Every feature is a small state machine: ``step`` takes one symbol's state vector and one bar
and writes that bar's feature values. The batch engines run it along time for each symbol and
the incremental engine runs it across symbols for each micro-batch; because both call the
same compiled ``_step_bar``, they agree bit for bit, and the state vector is a plain float64
array that can be saved and restored anywhere in a series.

The arithmetic follows TA-Lib's C code operation by operation (running sums added before and
subtracted after each output, SMA seeds summed in order, Wilder smoothing as
``(prev * (n - 1) + x) / n``, ``TA_IS_ZERO`` thresholds) so values match TA-Lib to rounding.

State layout (offsets are relative to the feature's slice of the state vector) is documented
beside each feature. ``plan`` rows are ``(kind, state offset, output offset)``; ``params`` rows
hold up to three parameters as floats.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOGRET, SMA, EMA, RSI, MACD, BBANDS, ATR, OBV, VOL, ZSCORE_CLOSE, ZSCORE_VOLUME, STOCH, ADX = (
    range(13)
)
_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold
_NAN = np.nan


@njit(cache=True, inline="always")
def _is_zero(value: float) -> bool:
    return -_ZERO < value < _ZERO


@njit(cache=True, inline="always")
def _true_range(high: float, low: float, prev_close: float) -> float:
    out = high - low
    up = abs(high - prev_close)
    if up > out:
        out = up
    down = abs(low - prev_close)
    if down > out:
        out = down
    return out


@njit(cache=True, inline="always")
def _next(pos: int, n: int) -> int:
    pos += 1
    return 0 if pos == n else pos


# ---- windowed primitives -------------------------------------------------------------------
# sum window, size 3 + n: [count, running total, ring position, ring[n]]
@njit(cache=True, inline="always")
def _sma_push(st: np.ndarray, n: int, x: float) -> float:
    count = st[0] + 1.0
    st[0] = count
    pos = int(st[2])
    st[3 + pos] = x
    total = st[1] + x
    out = _NAN
    if count >= n:
        out = total / n
        total -= st[3 + _next(pos, n)]
    st[1] = total
    st[2] = _next(pos, n)
    return out


# variance window, size 4 + n: [count, sum, sum of squares, ring position, ring[n]]
@njit(cache=True, inline="always")
def _var_push(st: np.ndarray, n: int, x: float) -> tuple[float, float]:
    count = st[0] + 1.0
    st[0] = count
    pos = int(st[3])
    st[4 + pos] = x
    s1 = st[1] + x
    s2 = st[2] + x * x
    mean = _NAN
    var = _NAN
    if count >= n:
        mean = s1 / n
        var = s2 / n - mean * mean
        old = st[4 + _next(pos, n)]
        s1 -= old
        s2 -= old * old
    st[1] = s1
    st[2] = s2
    st[3] = _next(pos, n)
    return mean, var


# EMA seeded by the mean of the n values ending at input number `seed_at` (TA-Lib seeds a
# standalone EMA at input n; MACD seeds its fast EMA where the slow one starts).
# size 3 + n: [count, value, ring position, ring[n]]
@njit(cache=True, inline="always")
def _ema_push(st: np.ndarray, n: int, seed_at: int, x: float) -> float:
    count = st[0] + 1.0
    st[0] = count
    if count > seed_at:
        value = (x - st[1]) * (2.0 / (n + 1)) + st[1]
        st[1] = value
        return value
    pos = int(st[2])
    st[3 + pos] = x
    pos = _next(pos, n)
    st[2] = pos
    if count < seed_at:
        return _NAN
    total = 0.0
    for _ in range(n):  # oldest first, as TA-Lib sums its seed
        total += st[3 + pos]
        pos = _next(pos, n)
    value = total / n
    st[1] = value
    return value


# ---- features -------------------------------------------------------------------------------
# logret: [count, ring position, ring[k]] closes
@njit(cache=True, inline="always")
def _logret(st: np.ndarray, k: int, close: float, out: np.ndarray, o: int) -> None:
    count = st[0] + 1.0
    st[0] = count
    pos = int(st[1])
    out[o] = math.log(close / st[2 + pos]) if count > k else _NAN
    st[2 + pos] = close
    st[1] = _next(pos, k)


# rsi: [count, previous close, average gain, average loss]
@njit(cache=True, inline="always")
def _rsi(st: np.ndarray, n: int, close: float, out: np.ndarray, o: int) -> None:
    count = st[0] + 1.0
    st[0] = count
    out[o] = _NAN
    if count == 1.0:
        st[1] = close
        return
    diff = close - st[1]
    st[1] = close
    gain = st[2]
    loss = st[3]
    if count > n + 1:
        gain *= n - 1
        loss *= n - 1
    if diff < 0:
        loss -= diff
    else:
        gain += diff
    if count >= n + 1:
        gain /= n
        loss /= n
        total = gain + loss
        out[o] = 100.0 * (gain / total) if not _is_zero(total) else 0.0
    st[2] = gain
    st[3] = loss


# macd: fast EMA [0, 3 + fast), slow EMA [3 + fast, 6 + fast + slow), signal EMA after
@njit(cache=True, inline="always")
def _macd(
    st: np.ndarray, fast: int, slow: int, signal: int, close: float, out: np.ndarray, o: int
) -> None:
    f = _ema_push(st[0 : 3 + fast], fast, slow, close)
    s = _ema_push(st[3 + fast : 6 + fast + slow], slow, slow, close)
    out[o] = out[o + 1] = out[o + 2] = _NAN
    if math.isnan(s):
        return
    line = f - s
    sig = _ema_push(st[6 + fast + slow : 9 + fast + slow + signal], signal, signal, line)
    if not math.isnan(sig):
        out[o] = line
        out[o + 1] = sig
        out[o + 2] = line - sig


# bbands: a variance window; outputs upper, middle, lower, %B, bandwidth
@njit(cache=True, inline="always")
def _bbands(st: np.ndarray, n: int, k: float, close: float, out: np.ndarray, o: int) -> None:
    middle, var = _var_push(st, n, close)
    if math.isnan(middle):
        for i in range(5):
            out[o + i] = _NAN
        return
    std = math.sqrt(var) if var >= _ZERO else 0.0
    width = std * k
    upper = middle + width
    lower = middle - width
    out[o] = upper
    out[o + 1] = middle
    out[o + 2] = lower
    out[o + 3] = (close - lower) / (upper - lower) if upper > lower else _NAN
    out[o + 4] = (upper - lower) / middle if middle != 0.0 else _NAN


# atr: [count, previous close, average true range]
@njit(cache=True, inline="always")
def _atr(
    st: np.ndarray, n: int, high: float, low: float, close: float, out: np.ndarray, o: int
) -> None:
    count = st[0] + 1.0
    st[0] = count
    out[o] = _NAN
    if count == 1.0:
        st[1] = close
        return
    tr = _true_range(high, low, st[1])
    st[1] = close
    if count <= n + 1:
        st[2] += tr
        if count == n + 1:
            st[2] /= n
            out[o] = st[2]
    else:
        st[2] = (st[2] * (n - 1) + tr) / n
        out[o] = st[2]


# obv: [count, previous close, on-balance volume]
@njit(cache=True, inline="always")
def _obv(st: np.ndarray, close: float, volume: float, out: np.ndarray, o: int) -> None:
    count = st[0] + 1.0
    st[0] = count
    if count == 1.0:
        st[2] = volume
    elif close > st[1]:
        st[2] += volume
    elif close < st[1]:
        st[2] -= volume
    st[1] = close
    out[o] = st[2]


# vol: [count, previous close] then a variance window over 1-bar log returns
@njit(cache=True, inline="always")
def _vol(st: np.ndarray, n: int, close: float, out: np.ndarray, o: int) -> None:
    count = st[0] + 1.0
    st[0] = count
    prev = st[1]
    st[1] = close
    out[o] = _NAN
    if count == 1.0:
        return
    _, var = _var_push(st[2:], n, math.log(close / prev))
    if not math.isnan(var):
        out[o] = math.sqrt(var) if var > 0.0 else 0.0


# z-score of one input: a variance window; undefined (NaN) while the window is flat
@njit(cache=True, inline="always")
def _zscore(st: np.ndarray, n: int, x: float, out: np.ndarray, o: int) -> None:
    mean, var = _var_push(st, n, x)
    out[o] = (x - mean) / math.sqrt(var) if var >= _ZERO else _NAN


# stoch: [count, ring position, highest, its bar, lowest, its bar, highs[n], lows[n]], then
# slow-%K and %D sum windows. The extremes are rescanned only when they leave the window.
@njit(cache=True, inline="always")
def _stoch(
    st: np.ndarray,
    n: int,
    smooth: int,
    high: float,
    low: float,
    close: float,
    out: np.ndarray,
    o: int,
) -> None:
    count = st[0] + 1.0
    st[0] = count
    pos = int(st[1])
    st[6 + pos] = high
    st[6 + n + pos] = low
    pos = _next(pos, n)
    st[1] = pos
    if count == 1.0 or high >= st[2]:
        st[2] = high
        st[3] = count
    elif st[3] <= count - n:
        st[2] = st[6 + pos]
        st[3] = count - n + 1
        for i in range(1, n):
            value = st[6 + (pos + i if pos + i < n else pos + i - n)]
            if value >= st[2]:
                st[2] = value
                st[3] = count - n + 1 + i
    if count == 1.0 or low <= st[4]:
        st[4] = low
        st[5] = count
    elif st[5] <= count - n:
        st[4] = st[6 + n + pos]
        st[5] = count - n + 1
        for i in range(1, n):
            value = st[6 + n + (pos + i if pos + i < n else pos + i - n)]
            if value <= st[4]:
                st[4] = value
                st[5] = count - n + 1 + i
    out[o] = out[o + 1] = _NAN
    if count < n:
        return
    lowest = st[4]
    diff = (st[2] - lowest) / 100.0
    fast_k = (close - lowest) / diff if diff != 0.0 else 0.0
    base = 6 + 2 * n
    slow_k = _sma_push(st[base : base + 3 + smooth], smooth, fast_k)
    if math.isnan(slow_k):
        return
    slow_d = _sma_push(st[base + 3 + smooth : base + 6 + 2 * smooth], smooth, slow_k)
    if not math.isnan(slow_d):
        out[o] = slow_k
        out[o + 1] = slow_d


# adx: [count, prev high, prev low, prev close, +DM, -DM, TR, sum of DX, ADX]
@njit(cache=True, inline="always")
def _adx(
    st: np.ndarray, n: int, high: float, low: float, close: float, out: np.ndarray, o: int
) -> None:
    count = st[0] + 1.0
    st[0] = count
    out[o] = _NAN
    if count == 1.0:
        st[1] = high
        st[2] = low
        st[3] = close
        return
    diff_p = high - st[1]
    diff_m = st[2] - low
    st[1] = high
    st[2] = low
    tr = _true_range(high, low, st[3])
    st[3] = close
    plus_dm = st[4]
    minus_dm = st[5]
    if count > n:
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
    if diff_m > 0 and diff_p < diff_m:
        minus_dm += diff_m
    elif diff_p > 0 and diff_p > diff_m:
        plus_dm += diff_p
    st[4] = plus_dm
    st[5] = minus_dm
    if count <= n:
        st[6] += tr
        return
    st[6] = st[6] - st[6] / n + tr
    dx = _NAN
    if not _is_zero(st[6]):
        minus_di = 100.0 * (minus_dm / st[6])
        plus_di = 100.0 * (plus_dm / st[6])
        total = minus_di + plus_di
        if not _is_zero(total):
            dx = 100.0 * (abs(minus_di - plus_di) / total)
    if count <= 2 * n:
        if not math.isnan(dx):
            st[7] += dx
        if count == 2 * n:
            st[8] = st[7] / n
            out[o] = st[8]
        return
    if not math.isnan(dx):
        st[8] = (st[8] * (n - 1) + dx) / n
    out[o] = st[8]


# ---- drivers ----------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _step(
    kind: int,
    st: np.ndarray,
    p: np.ndarray,
    high: float,
    low: float,
    close: float,
    volume: float,
    out: np.ndarray,
    o: int,
) -> None:
    """Advances one feature of one symbol by one bar."""
    a = int(p[0])
    if kind == LOGRET:
        _logret(st, a, close, out, o)
    elif kind == SMA:
        out[o] = _sma_push(st, a, close)
    elif kind == EMA:
        out[o] = _ema_push(st, a, a, close)
    elif kind == RSI:
        _rsi(st, a, close, out, o)
    elif kind == MACD:
        _macd(st, a, int(p[1]), int(p[2]), close, out, o)
    elif kind == BBANDS:
        _bbands(st, a, p[1], close, out, o)
    elif kind == ATR:
        _atr(st, a, high, low, close, out, o)
    elif kind == OBV:
        _obv(st, close, volume, out, o)
    elif kind == VOL:
        _vol(st, a, close, out, o)
    elif kind == ZSCORE_CLOSE:
        _zscore(st, a, close, out, o)
    elif kind == ZSCORE_VOLUME:
        _zscore(st, a, volume, out, o)
    elif kind == STOCH:
        _stoch(st, a, int(p[1]), high, low, close, out, o)
    elif kind == ADX:
        _adx(st, a, high, low, close, out, o)


@njit(cache=True)
def _run_feature(
    kind: int,
    st: np.ndarray,
    p: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
    o: int,
) -> None:
    """Runs one feature along one series; one loop per kind so each loop is specialised."""
    t_end = close.shape[0]
    if kind == LOGRET:
        for t in range(t_end):
            _step(LOGRET, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == SMA:
        for t in range(t_end):
            _step(SMA, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == EMA:
        for t in range(t_end):
            _step(EMA, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == RSI:
        for t in range(t_end):
            _step(RSI, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == MACD:
        for t in range(t_end):
            _step(MACD, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == BBANDS:
        for t in range(t_end):
            _step(BBANDS, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == ATR:
        for t in range(t_end):
            _step(ATR, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == OBV:
        for t in range(t_end):
            _step(OBV, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == VOL:
        for t in range(t_end):
            _step(VOL, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == ZSCORE_CLOSE:
        for t in range(t_end):
            _step(ZSCORE_CLOSE, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == ZSCORE_VOLUME:
        for t in range(t_end):
            _step(ZSCORE_VOLUME, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == STOCH:
        for t in range(t_end):
            _step(STOCH, st, p, high[t], low[t], close[t], volume[t], out[t], o)
    elif kind == ADX:
        for t in range(t_end):
            _step(ADX, st, p, high[t], low[t], close[t], volume[t], out[t], o)


@njit(cache=True, nogil=True)
def run_series(
    plan: np.ndarray,
    params: np.ndarray,
    state_size: int,
    starts: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
) -> None:
    """Batch: runs each series ``[starts[i], starts[i + 1])`` from a fresh state.

    Features keep separate state, so running one feature along the whole series before the
    next does the same arithmetic as :func:`run_rows`, in a tighter loop.
    """
    state = np.zeros(state_size)
    for s in range(starts.shape[0] - 1):
        a = starts[s]
        b = starts[s + 1]
        state[:] = 0.0
        for f in range(plan.shape[0]):
            _run_feature(
                plan[f, 0],
                state[plan[f, 1] :],
                params[f],
                high[a:b],
                low[a:b],
                close[a:b],
                volume[a:b],
                out[a:b],
                plan[f, 2],
            )


@njit(cache=True, nogil=True)
def run_rows(
    plan: np.ndarray,
    params: np.ndarray,
    states: np.ndarray,
    rows: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
) -> None:
    """Incremental: applies bar ``t`` to the state of series ``rows[t]``, in order."""
    for t in range(rows.shape[0]):
        state = states[rows[t]]
        for f in range(plan.shape[0]):
            _step(
                plan[f, 0],
                state[plan[f, 1] :],
                params[f],
                high[t],
                low[t],
                close[t],
                volume[t],
                out[t],
                plan[f, 2],
            )
