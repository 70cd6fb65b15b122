"""The indicator arithmetic: one fused kernel per feature spec, generated and compiled with numba.

Every feature is a small state machine over a symbol's bars. For a spec, :func:`fused_kernel`
writes the source of one function, ``advance(state, high, low, close, volume, out, first,
last)``, that runs bars ``first..last-1`` of one symbol through every feature of the spec in
one pass: each feature's running values (counts, sums, smoothed averages, ring positions) are
read from the state vector into local variables once, kept in registers along the bars, and
written back once at the end; only ring buffers (the windows' past inputs) stay in the state
vector. Parameters are literals in the source, so each spec gets code specialised to it.

The batch engines call ``advance`` once per symbol over its whole series
(:func:`run_series`); the incremental engine runs the same lines once per bar of a
micro-batch on that bar's symbol's row of a states matrix (:func:`run_rows`: ``rows``, the
same load, step and store with ``state[i]`` read as ``states[r, i]``, in place, which costs
about half of a call of ``advance`` on a row view per bar). Storing a float64 and loading it
again is exact, so both give the same values bit for bit, and the state vector (the layout
given beside each feature, the same as the earlier per-bar kernels') is the checkpoint format.

The arithmetic follows TA-Lib's C code operation by operation (running sums added before and
subtracted after each output, SMA seeds summed in order, Wilder smoothing as
``(prev * (n - 1) + x) / n``, ``TA_IS_ZERO`` thresholds) so values match TA-Lib to rounding.
Where TA-Lib branches on the data (a close up or down, the greatest of three ranges, which
directional move counts), the kernels select instead (``x if cond else y``, ``max``, ``min``,
adding 0.0): prices go either way at random, a mispredicted branch costs more than both
sides, and adding 0.0 or multiplying by 1.0 is exact, so the values are TA-Lib's all the same
(the default spec ran 13% faster for it at 10M rows; taking the stochastic's extremes over the
whole window at each bar, 10% more).

The generated source is written to a file named after its hash under :data:`CACHE_DIR` and
imported from there, so numba's on-disk cache (``cache=True``) keeps the machine code across
processes: a spec compiles once per machine, and every later process (Ray workers, Spark's
Python workers) loads it. Each process also keeps its kernels in memory per plan.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

LOGRET, SMA, EMA, RSI, MACD, BBANDS, ATR, OBV, VOL, ZSCORE_CLOSE, ZSCORE_VOLUME, STOCH, ADX = range(
    13
)
_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold

CACHE_DIR = (
    Path(
        os.environ.get("NUMBA_CACHE_DIR")
        or os.environ.get("XDG_CACHE_HOME")
        or Path.home() / ".cache"
    )
    / "ray_apps_kernels"
)
"""Where generated kernel sources and numba's compiled code live.

Under ``NUMBA_CACHE_DIR`` when set, else the user's cache folder; the system's temporary folder
when that cannot be written.
"""


@dataclass
class _Code:
    """Lines of a feature's part of ``advance``: before the loop, per bar, after the loop."""

    load: list[str] = field(default_factory=list)
    step: list[str] = field(default_factory=list)
    store: list[str] = field(default_factory=list)

    def __add__(self, other: _Code) -> _Code:
        return _Code(self.load + other.load, self.step + other.step, self.store + other.store)


def _indent(lines: list[str], depth: int = 1) -> list[str]:
    return ["    " * depth + line for line in lines]


def _locals(p: str, base: int, names: dict[int, tuple[str, str]]) -> _Code:
    """Scalars at ``state[base + offset]`` held in locals ``p + name`` (``int`` or ``float``)."""
    load = [f"{p}{name} = {kind}(state[{base + at}])" for at, (name, kind) in names.items()]
    store = [f"state[{base + at}] = {p}{name}" for at, (name, _) in names.items()]
    return _Code(load=load, store=store)


def _tree(op: str, terms: list[str]) -> str:
    """``op`` (max or min, exact in any order) of the terms, nested as a balanced tree.

    A chain of n - 1 steps, each waiting for the one before, takes n - 1 latencies; the tree
    takes log2(n) of them.
    """
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return f"{op}({_tree(op, terms[:half])}, {_tree(op, terms[half:])})"


def _advance_ring(p: str, n: int) -> list[str]:
    return [f"{p}pos += 1", f"if {p}pos == {n}:", f"    {p}pos = 0"]


# ---- windowed primitives -------------------------------------------------------------------
def _sum_window(p: str, base: int, n: int, x: str, result: str) -> _Code:
    """SMA of ``x``; state ``[count, running total, ring position, ring[n]]``."""
    ring = base + 3
    code = _locals(p, base, {0: ("count", "int"), 1: ("total", "float"), 2: ("pos", "int")})
    code.step = [
        f"{p}count += 1",
        f"state[{ring} + {p}pos] = {x}",
        f"{p}total += {x}",
        *_advance_ring(p, n),
        f"if {p}count >= {n}:",
        f"    {result} = {p}total * {1.0 / n!r}",
        f"    {p}total -= state[{ring} + {p}pos]",
        "else:",
        f"    {result} = NAN",
    ]
    return code


def _variance_window(
    p: str, base: int, n: int, x: str, mean: str, var: str, mirrors: tuple[int, ...] = ()
) -> _Code:
    """Mean and population variance of ``x``.

    State ``[count, sum, sum of squares, ring position, ring[n]]``, kept at ``base`` and
    copied to each of ``mirrors`` (features of the spec with the same window).
    """
    ring = base + 4
    names = {0: ("count", "int"), 1: ("s1", "float"), 2: ("s2", "float"), 3: ("pos", "int")}
    code = _locals(p, base, names)
    for mirror in mirrors:
        code.store += _locals(p, mirror, names).store
    code.step = [
        f"{p}count += 1",
        f"state[{ring} + {p}pos] = {x}",
        *(f"state[{mirror + 4} + {p}pos] = {x}" for mirror in mirrors),
        f"{p}s1 += {x}",
        f"{p}s2 += {x} * {x}",
        *_advance_ring(p, n),
        f"if {p}count >= {n}:",
        f"    {mean} = {p}s1 * {1.0 / n!r}",
        f"    {var} = {p}s2 * {1.0 / n!r} - {mean} * {mean}",
        f"    {p}old = state[{ring} + {p}pos]",
        f"    {p}s1 -= {p}old",
        f"    {p}s2 -= {p}old * {p}old",
        "else:",
        f"    {mean} = NAN",
        f"    {var} = NAN",
    ]
    return code


@dataclass
class _Shared:
    """Values that several features of a spec compute alike, computed once per bar.

    Attributes:
        bases: each variance window over a bar input (``c`` or ``v``), as ``(input, n)`` ->
            the state offsets of the features using it, the first of which (the leader)
            computes it.
        prefixes: the leader's local-name prefix per window.
        log_return: the local holding ``log(close / previous close)`` (1-bar log return and
            realized volatility) once a feature computes it; empty before.
    """

    bases: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    prefixes: dict[tuple[str, int], str] = field(default_factory=dict)
    log_return: str = ""

    def log_return_line(self, p: str, previous_close: str) -> tuple[str, str]:
        """A line computing the 1-bar log return, and the local holding it.

        The line is ``pass`` when an earlier feature computes it; the value is valid from a
        symbol's second bar.
        """
        if self.log_return:
            return "pass", self.log_return
        self.log_return = f"{p}lr"
        return f"{p}lr = log_ratio(c / {previous_close})", self.log_return

    def add(self, x: str, n: int, base: int, p: str) -> None:
        """Records that the feature at ``base`` (prefix ``p``) uses the window."""
        self.prefixes.setdefault((x, n), p)
        self.bases.setdefault((x, n), []).append(base)

    def window(self, x: str, n: int, base: int) -> tuple[_Code, str, str]:
        """The feature's code for the window, and the locals holding its mean and variance.

        Only the leader computes the window; the others read the leader's locals.
        """
        p = self.prefixes[(x, n)] + "w"
        leader, *mirrors = self.bases[(x, n)]
        mean, var = f"{p}mean", f"{p}var"
        if base != leader:
            return _Code(), mean, var
        return _variance_window(p, leader, n, x, mean, var, tuple(mirrors)), mean, var


def _ema(p: str, base: int, n: int, seed_at: int, x: str, result: str) -> _Code:
    """EMA seeded by the mean of the n values ending at input number ``seed_at``.

    TA-Lib seeds a standalone EMA at input n; MACD seeds its fast EMA where the slow one
    starts. State ``[count, value, ring position, ring[n]]``.
    """
    ring = base + 3
    code = _locals(p, base, {0: ("count", "int"), 1: ("value", "float"), 2: ("pos", "int")})
    code.step = [
        f"{p}count += 1",
        f"if {p}count > {seed_at}:",
        f"    {p}value = ({x} - {p}value) * {2.0 / (n + 1)!r} + {p}value",
        f"    {result} = {p}value",
        "else:",
        f"    state[{ring} + {p}pos] = {x}",
        *_indent(_advance_ring(p, n)),
        f"    if {p}count < {seed_at}:",
        f"        {result} = NAN",
        "    else:",
        f"        {p}seed = 0.0",
        f"        for _ in range({n}):  # oldest first, as TA-Lib sums its seed",
        f"            {p}seed += state[{ring} + {p}pos]",
        *_indent(_advance_ring(p, n), 3),
        f"        {p}value = {p}seed * {1.0 / n!r}",
        f"        {result} = {p}value",
    ]
    return code


def _true_range(p: str, prev_close: str) -> list[str]:
    """TA-Lib's true range: the greatest of high - low and the moves from the previous close."""
    return [
        f"{p}tr = max(max(h - lo, abs(h - {prev_close})), abs(lo - {prev_close}))",
    ]


# ---- features: (prefix, state offset, output offset, parameters) -> code ----------------------
def _logret(p: str, s: int, o: int, k: int, *, shared: _Shared) -> _Code:
    """``[count, ring position, ring[k]]`` of closes."""
    code = _locals(p, s, {0: ("count", "int"), 1: ("pos", "int")})
    previous = f"state[{s + 2} + {p}pos]"
    line, value = (
        shared.log_return_line(p, previous) if k == 1 else ("pass", f"log_ratio(c / {previous})")
    )
    code.step = [
        f"{p}count += 1",
        f"if {p}count > {k}:",
        f"    {line}",
        f"    out[t, {o}] = {value}",
        "else:",
        f"    out[t, {o}] = NAN",
        f"state[{s + 2} + {p}pos] = c",
        *_advance_ring(p, k),
    ]
    return code


def _sma(p: str, s: int, o: int, n: int) -> _Code:
    code = _sum_window(p, s, n, "c", f"{p}out")
    code.step.append(f"out[t, {o}] = {p}out")
    return code


def _ema_feature(p: str, s: int, o: int, n: int) -> _Code:
    code = _ema(p, s, n, n, "c", f"{p}out")
    code.step.append(f"out[t, {o}] = {p}out")
    return code


def _rsi(p: str, s: int, o: int, n: int) -> _Code:
    """``[count, previous close, average gain, average loss]``."""
    names = {0: ("count", "int"), 1: ("prev", "float"), 2: ("gain", "float"), 3: ("loss", "float")}
    code = _locals(p, s, names)
    code.step = [
        f"{p}count += 1",
        f"out[t, {o}] = NAN",
        f"if {p}count == 1:",
        f"    {p}prev = c",
        "else:",
        f"    {p}diff = c - {p}prev",
        f"    {p}prev = c",
        f"    if {p}count > {n + 1}:",
        f"        {p}gain *= {float(n - 1)!r}",
        f"        {p}loss *= {float(n - 1)!r}",
        f"    {p}loss -= min({p}diff, 0.0)",
        f"    {p}gain += max({p}diff, 0.0)",
        f"    if {p}count >= {n + 1}:",
        f"        {p}gain *= {1.0 / n!r}",
        f"        {p}loss *= {1.0 / n!r}",
        f"        {p}sum = {p}gain + {p}loss",
        f"        if -ZERO < {p}sum < ZERO:",
        f"            out[t, {o}] = 0.0",
        "        else:",
        f"            out[t, {o}] = 100.0 * ({p}gain / {p}sum)",
    ]
    return code


def _macd(p: str, s: int, o: int, fast: int, slow: int, signal: int) -> _Code:
    """Fast EMA ``[0, 3 + fast)``, slow EMA ``[3 + fast, 6 + fast + slow)``, signal EMA after."""
    fast_ema = _ema(p + "f", s, fast, slow, "c", f"{p}fast")
    slow_ema = _ema(p + "s", s + 3 + fast, slow, slow, "c", f"{p}slow")
    signal_ema = _ema(p + "g", s + 6 + fast + slow, signal, signal, f"{p}line", f"{p}signal")
    code = fast_ema + slow_ema
    code.load += signal_ema.load
    code.store += signal_ema.store
    code.step += [
        f"out[t, {o}] = out[t, {o + 1}] = out[t, {o + 2}] = NAN",
        f"if not math.isnan({p}slow):",
        f"    {p}line = {p}fast - {p}slow",
        *_indent(signal_ema.step),
        f"    if not math.isnan({p}signal):",
        f"        out[t, {o}] = {p}line",
        f"        out[t, {o + 1}] = {p}signal",
        f"        out[t, {o + 2}] = {p}line - {p}signal",
    ]
    return code


def _bbands(p: str, s: int, o: int, n: int, k: float, *, shared: _Shared) -> _Code:
    """A variance window; outputs upper, middle, lower, %B, bandwidth."""
    code, middle, var = shared.window("c", n, s)
    code.step += [
        f"{p}middle = {middle}",
        f"{p}var = {var}",
        f"if math.isnan({p}middle):",
        *(f"    out[t, {o + i}] = NAN" for i in range(5)),
        "else:",
        f"    {p}std = math.sqrt({p}var) if {p}var >= ZERO else 0.0",
        f"    {p}width = {p}std * {float(k)!r}",
        f"    {p}upper = {p}middle + {p}width",
        f"    {p}lower = {p}middle - {p}width",
        f"    out[t, {o}] = {p}upper",
        f"    out[t, {o + 1}] = {p}middle",
        f"    out[t, {o + 2}] = {p}lower",
        f"    if {p}upper > {p}lower:",
        f"        out[t, {o + 3}] = (c - {p}lower) / ({p}upper - {p}lower)",
        "    else:",
        f"        out[t, {o + 3}] = NAN",
        f"    if {p}middle != 0.0:",
        f"        out[t, {o + 4}] = ({p}upper - {p}lower) / {p}middle",
        "    else:",
        f"        out[t, {o + 4}] = NAN",
    ]
    return code


def _atr(p: str, s: int, o: int, n: int) -> _Code:
    """``[count, previous close, average true range]``."""
    code = _locals(p, s, {0: ("count", "int"), 1: ("prev", "float"), 2: ("atr", "float")})
    code.step = [
        f"{p}count += 1",
        f"out[t, {o}] = NAN",
        f"if {p}count == 1:",
        f"    {p}prev = c",
        "else:",
        *_indent(_true_range(p, f"{p}prev")),
        f"    {p}prev = c",
        f"    if {p}count <= {n + 1}:",
        f"        {p}atr += {p}tr",
        f"        if {p}count == {n + 1}:",
        f"            {p}atr *= {1.0 / n!r}",
        f"            out[t, {o}] = {p}atr",
        "    else:",
        f"        {p}atr = ({p}atr * {float(n - 1)!r} + {p}tr) * {1.0 / n!r}",
        f"        out[t, {o}] = {p}atr",
    ]
    return code


def _obv(p: str, s: int, o: int) -> _Code:
    """``[count, previous close, on-balance volume]``."""
    code = _locals(p, s, {0: ("count", "int"), 1: ("prev", "float"), 2: ("obv", "float")})
    code.step = [
        f"{p}count += 1",
        f"if {p}count == 1:",
        f"    {p}obv = v",
        "else:",
        f"    {p}obv += v * ((1.0 if c > {p}prev else 0.0) - (1.0 if c < {p}prev else 0.0))",
        f"{p}prev = c",
        f"out[t, {o}] = {p}obv",
    ]
    return code


def _vol(p: str, s: int, o: int, n: int, *, shared: _Shared) -> _Code:
    """``[count, previous close]`` then a variance window over 1-bar log returns."""
    code = _locals(p, s, {0: ("count", "int"), 1: ("prev", "float")})
    window = _variance_window(p + "w", s + 2, n, f"{p}ret", f"{p}mean", f"{p}var")
    code.load += window.load
    code.store += window.store
    line, value = shared.log_return_line(p, f"{p}last")
    code.step = [
        f"{p}count += 1",
        f"{p}last = {p}prev",
        f"{p}prev = c",
        f"out[t, {o}] = NAN",
        f"if {p}count != 1:",
        f"    {line}",
        f"    {p}ret = {value}",
        *_indent(window.step),
        f"    if not math.isnan({p}var):",
        f"        out[t, {o}] = math.sqrt({p}var) if {p}var > 0.0 else 0.0",
    ]
    return code


def _zscore(x: str) -> Callable[[str, int, int, int], _Code]:
    def zscore(p: str, s: int, o: int, n: int, *, shared: _Shared) -> _Code:
        """A variance window; undefined (NaN) while the window is flat."""
        code, mean, var = shared.window(x, n, s)
        code.step += [
            f"if {var} >= ZERO:",
            f"    out[t, {o}] = ({x} - {mean}) / math.sqrt({var})",
            "else:",
            f"    out[t, {o}] = NAN",
        ]
        return code

    return zscore


def _stoch(p: str, s: int, o: int, n: int, smooth: int) -> _Code:
    """Slow stochastic.

    State ``[count, ring position, 4 unused, highs[n], lows[n]]``, then the slow-%K and %D sum
    windows. The highest high and lowest low are taken over the whole ring at each bar, as a
    tree without branches: faster than TA-Lib's rescan-when-it-leaves on 14 bars, and with no
    state of their own. (The four unused slots held them and their bars in the first layout;
    they stay so that saved states keep loading.)
    """
    code = _locals(p, s, {0: ("count", "int"), 1: ("pos", "int")})
    highs, lows = s + 6, s + 6 + n
    base = s + 6 + 2 * n
    slow_k = _sum_window(p + "k", base, smooth, f"{p}fast_k", f"{p}slow_k")
    slow_d = _sum_window(p + "d", base + 3 + smooth, smooth, f"{p}slow_k", f"{p}slow_d")
    for part in (slow_k, slow_d):
        code.load += part.load
        code.store += part.store
    code.step = [
        f"{p}count += 1",
        f"state[{highs} + {p}pos] = h",
        f"state[{lows} + {p}pos] = lo",
        *_advance_ring(p, n),
        f"out[t, {o}] = out[t, {o + 1}] = NAN",
        f"if {p}count >= {n}:",
        f"    {p}high = {_tree('max', [f'state[{highs + j}]' for j in range(n)])}",
        f"    {p}low = {_tree('min', [f'state[{lows + j}]' for j in range(n)])}",
        f"    {p}range = ({p}high - {p}low) * 0.01",
        f"    {p}fast_k = (c - {p}low) / {p}range if {p}range != 0.0 else 0.0",
        *_indent(slow_k.step),
        f"    if not math.isnan({p}slow_k):",
        *_indent(slow_d.step, 2),
        f"        if not math.isnan({p}slow_d):",
        f"            out[t, {o}] = {p}slow_k",
        f"            out[t, {o + 1}] = {p}slow_d",
    ]
    return code


def _adx(p: str, s: int, o: int, n: int) -> _Code:
    """``[count, prev high, prev low, prev close, +DM, -DM, TR, sum of DX, ADX]``."""
    names = {
        0: ("count", "int"),
        1: ("ph", "float"),
        2: ("pl", "float"),
        3: ("pc", "float"),
        4: ("pdm", "float"),
        5: ("mdm", "float"),
        6: ("trs", "float"),
        7: ("dxs", "float"),
        8: ("adx", "float"),
    }
    code = _locals(p, s, names)
    code.step = [
        f"{p}count += 1",
        f"out[t, {o}] = NAN",
        f"if {p}count == 1:",
        f"    {p}ph = h",
        f"    {p}pl = lo",
        f"    {p}pc = c",
        "else:",
        f"    {p}diff_p = h - {p}ph",
        f"    {p}diff_m = {p}pl - lo",
        f"    {p}ph = h",
        f"    {p}pl = lo",
        *_indent(_true_range(p, f"{p}pc")),
        f"    {p}pc = c",
        f"    if {p}count > {n}:",
        f"        {p}mdm -= {p}mdm * {1.0 / n!r}",
        f"        {p}pdm -= {p}pdm * {1.0 / n!r}",
        f"    {p}mdm += {p}diff_m if ({p}diff_m > 0) & ({p}diff_p < {p}diff_m) else 0.0",
        f"    {p}pdm += {p}diff_p if ({p}diff_p > 0) & ({p}diff_p > {p}diff_m) else 0.0",
        f"    if {p}count <= {n}:",
        f"        {p}trs += {p}tr",
        "    else:",
        f"        {p}trs = {p}trs - {p}trs * {1.0 / n!r} + {p}tr",
        f"        {p}dx = NAN",
        f"        if not (-ZERO < {p}trs < ZERO):",
        f"            {p}minus_di = 100.0 * ({p}mdm / {p}trs)",
        f"            {p}plus_di = 100.0 * ({p}pdm / {p}trs)",
        f"            {p}di_sum = {p}minus_di + {p}plus_di",
        f"            if not (-ZERO < {p}di_sum < ZERO):",
        f"                {p}dx = 100.0 * (abs({p}minus_di - {p}plus_di) / {p}di_sum)",
        f"        if {p}count <= {2 * n}:",
        f"            if not math.isnan({p}dx):",
        f"                {p}dxs += {p}dx",
        f"            if {p}count == {2 * n}:",
        f"                {p}adx = {p}dxs * {1.0 / n!r}",
        f"                out[t, {o}] = {p}adx",
        "        else:",
        f"            if not math.isnan({p}dx):",
        f"                {p}adx = ({p}adx * {float(n - 1)!r} + {p}dx) * {1.0 / n!r}",
        f"            out[t, {o}] = {p}adx",
    ]
    return code


_FEATURES: dict[int, tuple[Callable[..., _Code], int]] = {
    LOGRET: (_logret, 1),
    SMA: (_sma, 1),
    EMA: (_ema_feature, 1),
    RSI: (_rsi, 1),
    MACD: (_macd, 3),
    BBANDS: (_bbands, 2),
    ATR: (_atr, 1),
    OBV: (_obv, 0),
    VOL: (_vol, 1),
    ZSCORE_CLOSE: (_zscore("c"), 1),
    ZSCORE_VOLUME: (_zscore("v"), 1),
    STOCH: (_stoch, 2),
    ADX: (_adx, 1),
}
"""Each kind's code generator and how many of its plan parameters it takes."""
_FLOAT_PARAMS = {BBANDS: (1,)}  # parameters that are not whole numbers (Bollinger's k)
_WINDOW_INPUT = {BBANDS: "c", ZSCORE_CLOSE: "c", ZSCORE_VOLUME: "v"}  # kinds sharing windows
_SHARING = {*_WINDOW_INPUT, LOGRET, VOL}  # kinds whose generators take the spec's _Shared

_LOG_SERIES = "(1.0 + z * (" + " + z * (".join(repr(1.0 / k) for k in range(3, 23, 2)) + ")" * 11
"""1 + z/3 + z**2/5 + ... + z**10/21 by Horner's rule: 2 s times it is 2 atanh(s) = log(x)."""

_TEMPLATE = '''"""Generated by ray_apps.features.kernels for one feature plan; do not edit."""
import math

import numpy as np
from numba import njit

NAN = np.nan
ZERO = {zero!r}


@njit(cache=True, inline="always", error_model="numpy")
def log_ratio(x):
    """log(x), inline for the ratios of nearby prices (no call, so no registers spilled)."""
    if 0.7 < x < 1.4:  # 2 atanh(s), |s| < 1/6: the series to s**21 is exact to rounding
        s = (x - 1.0) / (x + 1.0)
        z = s * s
        return 2.0 * s * {log_series}
    return math.log(x)


@njit(cache=True, nogil=True, error_model="numpy")
def advance(state, high, low, close, volume, out, first, last):
    """Runs bars first..last-1 of one symbol through every feature, from and to ``state``."""
{load}
    for t in range(first, last):
        h = high[t]
        lo = low[t]
        c = close[t]
        v = volume[t]
{step}
{store}


@njit(cache=True, nogil=True, error_model="numpy")
def series(starts, high, low, close, volume, out):
    """Each run ``starts[i]..starts[i + 1]-1`` from a fresh state."""
    state = np.zeros({state_size})
    for s in range(starts.shape[0] - 1):
        state[:] = 0.0
        advance(state, high, low, close, volume, out, starts[s], starts[s + 1])


@njit(cache=True, nogil=True, error_model="numpy")
def rows(states, rows, high, low, close, volume, out):
    """Bar t applied to the state of series rows[t], in order: ``advance``'s lines in place.

    A negative row skips its bar (and leaves its ``out`` row as it was).
    """
    for t in range(rows.shape[0]):
        r = rows[t]
        if r < 0:
            continue
{row_load}
        h = high[t]
        lo = low[t]
        c = close[t]
        v = volume[t]
{row_step}
{row_store}
'''
#: A generated line's reads and writes of the state vector, as ``rows`` spells them.
_STATE_ACCESS = re.compile(r"\bstate\[")


def kernel_source(plan: np.ndarray, params: np.ndarray, state_size: int) -> str:
    """The Python source of the fused kernel module for a compiled plan.

    Args:
        plan: int64 rows ``(kind, state offset, output offset)``.
        params: float64 rows of the features' parameters.
        state_size: floats of state per symbol.
    """
    features = []
    shared = _Shared()
    for i, ((kind, state, output), values) in enumerate(zip(plan.tolist(), params, strict=True)):
        floats = _FLOAT_PARAMS.get(kind, ())
        args = [
            float(values[j]) if j in floats else int(values[j]) for j in range(_FEATURES[kind][1])
        ]
        features.append((kind, f"f{i}_", state, output, args))
        if kind in _WINDOW_INPUT:
            shared.add(_WINDOW_INPUT[kind], args[0], state, f"f{i}_")
    code = _Code()
    for kind, prefix, state, output, args in features:
        options = {"shared": shared} if kind in _SHARING else {}
        code += _FEATURES[kind][0](prefix, state, output, *args, **options)
    in_place = _Code(
        *(
            [_STATE_ACCESS.sub("states[r, ", line) for line in lines]
            for lines in (code.load, code.step, code.store)
        )
    )
    return _TEMPLATE.format(
        zero=_ZERO,
        load="\n".join(_indent(code.load)),
        step="\n".join(_indent(code.step, 2)),
        store="\n".join(_indent(code.store)),
        row_load="\n".join(_indent(in_place.load, 2)),
        row_step="\n".join(_indent(in_place.step, 2)),
        row_store="\n".join(_indent(in_place.store, 2)),
        state_size=state_size,
        log_series=_LOG_SERIES,
    )


_compiled: dict[bytes, ModuleType] = {}
_lock = threading.Lock()


def fused_kernel(plan: np.ndarray, params: np.ndarray, state_size: int) -> ModuleType:
    """The compiled kernel module of a plan: ``advance``, ``series`` and ``rows``.

    Kept in memory per plan; on disk (numba's cache) per source hash under :data:`CACHE_DIR`.
    """
    key = plan.tobytes() + params.tobytes() + state_size.to_bytes(8, "little")
    module = _compiled.get(key)
    if module is not None:
        return module
    with _lock:
        module = _compiled.get(key)
        if module is None:
            module = _compiled[key] = _load(kernel_source(plan, params, state_size))
    return module


def _load(source: str) -> ModuleType:
    """Imports ``source`` from a file named after its hash (written once, atomically)."""
    name = "fused_" + hashlib.sha1(source.encode()).hexdigest()[:16]
    try:
        path = _write_once(CACHE_DIR, name, source)
    except OSError:
        path = _write_once(Path(tempfile.gettempdir()) / "ray_apps_kernels", name, source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cached code finds its globals by module name
    spec.loader.exec_module(module)
    return module


def _write_once(folder: Path, name: str, source: str) -> Path:
    """``folder/name.py`` holding ``source``, written once (numba's cache keys on its time).

    Written to a temporary name and renamed, so a concurrent reader sees all of it or nothing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists():
        partial = folder / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        partial.write_text(source)
        os.replace(partial, path)
    return path


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
    """Batch: runs each series ``[starts[i], starts[i + 1])`` from a fresh state into ``out``.

    Args:
        plan: the plan's ``(kind, state offset, output offset)`` rows.
        params: the plan's parameter rows.
        state_size: floats of state per symbol.
        starts: int64 offsets of each symbol's run of bars, then the number of bars.
        high: high prices, float64.
        low: low prices, float64.
        close: close prices, float64.
        volume: volumes, float64.
        out: float64 ``(bars, columns)``, written in full.
    """
    fused_kernel(plan, params, state_size).series(starts, high, low, close, volume, out)


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
    """Incremental: applies bar ``t`` to the state ``states[rows[t]]``, in order.

    A bar whose row is negative is skipped: no state changes and its ``out`` row is not written.

    Args:
        plan: the plan's ``(kind, state offset, output offset)`` rows.
        params: the plan's parameter rows.
        states: float64 ``(symbols, state size)``, updated in place.
        rows: int64 state row of each bar (negative: skip the bar).
        high: high prices, float64.
        low: low prices, float64.
        close: close prices, float64.
        volume: volumes, float64.
        out: float64 ``(bars, columns)``, written for every bar applied.
    """
    kernel = fused_kernel(plan, params, states.shape[1])
    kernel.rows(states, rows, high, low, close, volume, out)
