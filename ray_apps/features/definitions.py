"""The feature catalogue: each kind's parameters, output columns, state size and warm-up.

The arithmetic lives in :mod:`ray_apps.features.kernels`; this module says what a spec entry
such as ``{name: macd, fast: 12, slow: 26, signal: 9}`` means. Column names follow one rule:
the column stem, then the parameters in declaration order, joined by ``_``
(``macd_signal_12_26_9``, ``bb_pctb_20_2``, ``obv``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_apps.features import kernels


class Params(BaseModel):
    """Base of every feature's parameters: strict, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def suffix(self) -> str:
        """The parameters joined by ``_`` in declaration order (``12_26_9``, ``20_2``)."""
        return "_".join(_format(value) for value in self.model_dump().values())

    def packed(self) -> tuple[float, ...]:
        """The parameters as floats, the way the kernels read them."""
        return tuple(float(value) for value in self.model_dump().values())


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Lag(Params):
    """Parameters of log returns."""

    k: int = Field(1, ge=1, le=10_000, description="Bars between the two closes.")


class Window(Params):
    """One look-back window."""

    n: int = Field(20, ge=2, le=10_000, description="Bars in the window.")


class Wilder(Params):
    """One Wilder-smoothed period."""

    n: int = Field(14, ge=2, le=10_000, description="Smoothing period in bars.")


class NoParams(Params):
    """A feature without parameters."""


class Macd(Params):
    """MACD periods."""

    fast: int = Field(12, ge=2, le=10_000, description="Fast EMA period.")
    slow: int = Field(26, ge=2, le=10_000, description="Slow EMA period.")
    signal: int = Field(9, ge=2, le=10_000, description="Signal EMA period.")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Macd:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class Bollinger(Params):
    """Bollinger band window and width."""

    n: int = Field(20, ge=2, le=10_000, description="Bars in the window.")
    k: float = Field(2.0, gt=0, le=100, description="Band half-width in standard deviations.")


class Stochastic(Params):
    """Stochastic oscillator periods."""

    n: int = Field(14, ge=2, le=10_000, description="Bars for the highest high / lowest low.")
    smooth: int = Field(3, ge=1, le=10_000, description="SMA period of slow %K and of %D.")


@dataclass(frozen=True)
class Definition:
    """One kind of feature.

    Attributes:
        name: the spec name (``rsi``).
        kind: the kernel's feature code.
        params: the parameter model.
        stems: output column stems; each gets the parameter suffix.
        state_size: floats of state per symbol, from the parameters.
        warmup: index of the first defined value (TA-Lib's lookback).
        summary: one line for docs and ``--help``.
    """

    name: str
    kind: int
    params: type[Params]
    stems: tuple[str, ...]
    state_size: Callable[[Params], int]
    warmup: Callable[[Params], int]
    summary: str

    def columns(self, params: Params) -> list[str]:
        """Output column names for these parameters."""
        suffix = params.suffix()
        return [f"{stem}_{suffix}" if suffix else stem for stem in self.stems]


DEFINITIONS: dict[str, Definition] = {
    d.name: d
    for d in (
        Definition(
            "logret",
            kernels.LOGRET,
            Lag,
            ("logret",),
            lambda p: 2 + p.k,
            lambda p: p.k,
            "log(close_t / close_{t-k})",
        ),
        Definition(
            "sma",
            kernels.SMA,
            Window,
            ("sma",),
            lambda p: 3 + p.n,
            lambda p: p.n - 1,
            "simple moving average of close",
        ),
        Definition(
            "ema",
            kernels.EMA,
            Window,
            ("ema",),
            lambda p: 3 + p.n,
            lambda p: p.n - 1,
            "exponential moving average of close, seeded with the SMA of the first n",
        ),
        Definition(
            "rsi",
            kernels.RSI,
            Wilder,
            ("rsi",),
            lambda p: 4,
            lambda p: p.n,
            "relative strength index, Wilder smoothing (0-100)",
        ),
        Definition(
            "macd",
            kernels.MACD,
            Macd,
            ("macd", "macd_signal", "macd_hist"),
            lambda p: 9 + p.fast + p.slow + p.signal,
            lambda p: p.slow + p.signal - 2,
            "MACD line (fast EMA - slow EMA), its signal EMA and the histogram",
        ),
        Definition(
            "bb",
            kernels.BBANDS,
            Bollinger,
            ("bb_upper", "bb_middle", "bb_lower", "bb_pctb", "bb_width"),
            lambda p: 4 + p.n,
            lambda p: p.n - 1,
            "Bollinger bands (population std), %B and bandwidth (upper - lower) / middle",
        ),
        Definition(
            "atr",
            kernels.ATR,
            Wilder,
            ("atr",),
            lambda p: 3,
            lambda p: p.n,
            "average true range, Wilder smoothing",
        ),
        Definition(
            "obv",
            kernels.OBV,
            NoParams,
            ("obv",),
            lambda p: 3,
            lambda p: 0,
            "on-balance volume, starting from the first bar's volume",
        ),
        Definition(
            "vol",
            kernels.VOL,
            Window,
            ("vol",),
            lambda p: 6 + p.n,
            lambda p: p.n,
            "realized volatility: population std of 1-bar log returns over n bars",
        ),
        Definition(
            "zclose",
            kernels.ZSCORE_CLOSE,
            Window,
            ("zclose",),
            lambda p: 4 + p.n,
            lambda p: p.n - 1,
            "z-score of close against its n-bar mean and population std",
        ),
        Definition(
            "zvolume",
            kernels.ZSCORE_VOLUME,
            Window,
            ("zvolume",),
            lambda p: 4 + p.n,
            lambda p: p.n - 1,
            "z-score of volume against its n-bar mean and population std",
        ),
        Definition(
            "stoch",
            kernels.STOCH,
            Stochastic,
            ("stoch_k", "stoch_d"),
            lambda p: 12 + 2 * p.n + 2 * p.smooth,
            lambda p: p.n - 1 + 2 * (p.smooth - 1),
            "slow stochastic %K (SMA of fast %K) and %D (SMA of slow %K)",
        ),
        Definition(
            "adx",
            kernels.ADX,
            Wilder,
            ("adx",),
            lambda p: 9,
            lambda p: 2 * p.n - 1,
            "average directional index, Wilder smoothing",
        ),
    )
}
