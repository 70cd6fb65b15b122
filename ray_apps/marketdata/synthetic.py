"""Seeded synthetic bars: correlated returns with volatility regimes and consistent OHLC.

Returns follow a one-factor model: ``r[t, i] = s[t] * sigma_i * (sqrt(rho) f[t] + sqrt(1 - rho)
e[t, i])`` with ``f`` and ``e`` standard normal, so any two symbols' returns correlate at
``rho``. ``s[t]`` is a shared two-state Markov regime (calm / stressed) that scales every
symbol's volatility at once, which leaves the correlation at ``rho``. Each random stream is
keyed by (seed, purpose, symbol), so any block of symbols can be generated on its own, in any
order or in parallel, and gives the same bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from ray_apps.marketdata.schema import BAR_COLUMNS, parse_interval

_FACTOR, _REGIME, _IDIO, _SHAPE, _PARAMS = range(5)
_TRADING_DAYS = 252


class SyntheticSpec(BaseModel):
    """What to generate."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    n_symbols: PositiveInt = Field(description="Number of symbols, named SYN0000, SYN0001, ...")
    n_bars: PositiveInt = Field(description="Bars per symbol.")
    interval: str = Field("1d", description="Bar interval; 1d bars fall on business days.")
    seed: int = Field(7, description="Same seed, same bars.")
    correlation: float = Field(0.3, ge=0.0, lt=1.0, description="Pairwise return correlation.")
    annual_volatility: float = Field(0.25, gt=0, description="Typical calm-regime volatility.")
    stress_multiplier: float = Field(2.5, ge=1.0, description="Volatility scale when stressed.")
    regime_persistence: float = Field(0.98, gt=0, lt=1, description="P(stay in a regime).")
    start: pd.Timestamp = Field(pd.Timestamp("2015-01-01", tz="UTC"), description="First bar.")

    @field_validator("interval")
    @classmethod
    def _known_interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @field_validator("start", mode="before")
    @classmethod
    def _utc_start(cls, value: object) -> pd.Timestamp:
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    @property
    def rows(self) -> int:
        """Total bars the spec describes."""
        return self.n_symbols * self.n_bars

    def symbol(self, index: int) -> str:
        """Name of the symbol at ``index``."""
        return f"SYN{index:04d}"

    def timestamps(self) -> pd.DatetimeIndex:
        """Open time of every bar."""
        if self.interval == "1d":
            return pd.bdate_range(self.start.normalize(), periods=self.n_bars, tz="UTC")
        step = parse_interval(self.interval)
        return pd.date_range(self.start, periods=self.n_bars, freq=step, tz="UTC")

    def bars_per_year(self) -> float:
        """Bars in a year at this interval (252 trading days for daily, 24/7 intraday)."""
        if self.interval == "1d":
            return _TRADING_DAYS
        return pd.Timedelta(days=365) / parse_interval(self.interval)


def regime_path(spec: SyntheticSpec) -> np.ndarray:
    """Volatility scale of each bar: 1 in the calm regime, ``stress_multiplier`` when stressed."""
    rng = np.random.default_rng([spec.seed, _REGIME])
    switches = rng.random(spec.n_bars) > spec.regime_persistence
    stressed = np.cumsum(switches) % 2 == 1
    return np.where(stressed, spec.stress_multiplier, 1.0)


def generate_bars(
    spec: SyntheticSpec,
    first: int = 0,
    count: int | None = None,
    *,
    text_as_category: bool = False,
) -> pd.DataFrame:
    """Bars for symbols ``first .. first + count - 1`` of the spec (default: all of them).

    Args:
        spec: what to generate.
        first: index of the first symbol.
        count: number of symbols (default: all from ``first``).
        text_as_category: ``symbol`` and ``interval`` as pandas categoricals instead of
            strings: the same values, cheaper to build and to validate (the ingest uses it).
    """
    count = spec.n_symbols - first if count is None else count
    if first < 0 or count < 0 or first + count > spec.n_symbols:
        raise ValueError(f"symbols {first}..{first + count} outside 0..{spec.n_symbols}")
    t = spec.n_bars
    factor = np.random.default_rng([spec.seed, _FACTOR]).standard_normal(t)
    scale = regime_path(spec)
    base_sigma = spec.annual_volatility / np.sqrt(spec.bars_per_year())
    rho = spec.correlation
    prices = {name: np.empty(count * t) for name in ("open", "high", "low", "close", "volume")}
    for k, i in enumerate(range(first, first + count)):
        rows = slice(k * t, (k + 1) * t)
        params = np.random.default_rng([spec.seed, _PARAMS, i])
        sigma = base_sigma * params.uniform(0.6, 1.6)
        price0 = float(np.exp(params.uniform(np.log(5), np.log(500))))
        volume0 = float(np.exp(params.uniform(np.log(1e4), np.log(1e7))))
        idio = np.random.default_rng([spec.seed, _IDIO, i]).standard_normal(t)
        returns = scale * sigma * (np.sqrt(rho) * factor + np.sqrt(1.0 - rho) * idio)
        shape = np.random.default_rng([spec.seed, _SHAPE, i])
        close = price0 * np.exp(np.cumsum(returns))
        gap = shape.standard_normal(t) * sigma * scale * 0.1
        open_ = prices["open"][rows]
        open_[0] = price0
        open_[1:] = close[:-1] * np.exp(gap[1:])
        wick = np.abs(shape.standard_normal((2, t))) * sigma * scale * 0.5
        prices["high"][rows] = np.maximum(open_, close) * np.exp(wick[0])
        prices["low"][rows] = np.minimum(open_, close) * np.exp(-wick[1])
        prices["close"][rows] = close
        volume = volume0 * scale * np.exp(0.3 * shape.standard_normal(t) + 8 * np.abs(returns))
        prices["volume"][rows] = np.round(volume)
    names = [spec.symbol(i) for i in range(first, first + count)]
    codes = np.repeat(np.arange(count, dtype=np.int32), t)
    if text_as_category:
        symbol = pd.Categorical.from_codes(codes, names)
        interval = pd.Categorical.from_codes(np.zeros(count * t, dtype=np.int8), [spec.interval])
    else:
        symbol = pd.Series(np.asarray(names, dtype=object)[codes], dtype="str")
        interval = pd.Series(spec.interval, index=range(count * t), dtype="str")
    timestamps = spec.timestamps().to_numpy(dtype="datetime64[us]")  # UTC, as numbers
    return pd.DataFrame(
        {
            "symbol": symbol,
            "interval": interval,
            "ts": pd.Series(np.tile(timestamps, count), dtype="datetime64[us, UTC]"),
            **prices,
        },
        columns=list(BAR_COLUMNS),
    )
