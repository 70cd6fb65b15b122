"""Labels and point-in-time training sets.

For each (symbol, t) a training row holds the features computed from bars up to and including
t, and labels from the closes after t: ``label_h = log(close[t + h] / close[t])``. Optional
cross-sectional ranking or z-scoring per date uses only that date's rows. Rows whose features
or labels are undefined (warm-up, the last h bars) are dropped.

:func:`check_point_in_time` proves a feature function does not look ahead: it recomputes the
features on the history cut at several times and requires every value at or before the cut to
be unchanged. A feature built from the future changes when the future is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_apps.errors import UserError

FeatureFunction = Callable[[pd.DataFrame], pd.DataFrame]
"""Bars (symbol, ts, OHLCV) in, ``symbol, ts`` plus feature columns out."""


class LookAheadError(UserError):
    """A feature's value at t changed when bars after t were removed."""


class TrainingSetConfig(BaseModel):
    """How training rows are built.

    Attributes:
        horizons: label horizons in bars (``label_1``, ``label_5``, ...).
        normalize: per-date cross-sectional transform of features and labels: ``rank`` (to
            (0, 1]), ``zscore`` (mean 0, population std 1), or ``none``.
        min_symbols: with a cross-sectional transform, dates with fewer symbols are dropped.
    """

    model_config = ConfigDict(extra="forbid")

    horizons: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)
    normalize: Literal["none", "rank", "zscore"] = "none"
    min_symbols: int = Field(5, ge=2)


def forward_returns(bars: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """``symbol, ts`` and ``label_h = log(close[t + h] / close[t])`` per symbol (NaN at the end)."""
    if any(h < 1 for h in horizons):
        raise UserError(f"label horizons must be at least 1 bar, got {list(horizons)}")
    bars = bars.sort_values(["symbol", "ts"], kind="stable")
    log_close = np.log(bars["close"].to_numpy(dtype=float))
    codes = bars["symbol"].to_numpy()
    labels = bars[["symbol", "ts"]].reset_index(drop=True)
    for h in horizons:
        future = np.full(len(bars), np.nan)
        same = np.zeros(len(bars), dtype=bool)
        same[:-h] = codes[h:] == codes[:-h]
        future[:-h] = np.where(same[:-h], log_close[h:], np.nan)
        labels[f"label_{h}"] = future - log_close
    return labels


def build_training_set(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    config: TrainingSetConfig | None = None,
) -> pd.DataFrame:
    """Point-in-time training rows: features at t, labels from t+1..t+h.

    Args:
        bars: the bars the features were computed from (for the labels).
        features: ``symbol, ts`` and feature columns, each row computed from bars up to ts.
        config: horizons and cross-sectional transform.

    Returns:
        ``symbol, ts``, the feature columns and the label columns, sorted by ts then symbol,
        without rows where any of them is undefined.
    """
    config = config or TrainingSetConfig()
    labels = forward_returns(bars, config.horizons)
    rows = features.merge(labels, on=["symbol", "ts"], how="inner", validate="one_to_one")
    value_columns = [c for c in rows.columns if c not in ("symbol", "ts")]
    rows = rows.replace([np.inf, -np.inf], np.nan).dropna(subset=value_columns)
    if config.normalize != "none":
        rows = cross_section(rows, value_columns, config.normalize, config.min_symbols)
    return rows.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def cross_section(
    rows: pd.DataFrame,
    columns: list[str],
    normalize: Literal["none", "rank", "zscore"],
    min_symbols: int,
) -> pd.DataFrame:
    """Transforms ``columns`` per date across the symbols of that date.

    Args:
        rows: ``symbol, ts`` and the columns, every value defined.
        columns: the columns to transform.
        normalize: ``rank`` (to (0, 1]), ``zscore`` (population std), or ``none``.
        min_symbols: dates with fewer symbols are dropped (unless ``none``).
    """
    if normalize == "none":
        return rows
    size = rows.groupby("ts")["symbol"].transform("size")
    rows = rows.loc[size >= min_symbols].copy()
    by_date = rows.groupby("ts")[columns]
    if normalize == "rank":
        rows[columns] = by_date.rank(pct=True)
    else:
        mean = by_date.transform("mean")
        std = by_date.transform(lambda x: x.std(ddof=0))
        rows[columns] = (rows[columns] - mean) / std.where(std > 0)
        rows = rows.dropna(subset=columns)
    return rows


def check_point_in_time(
    compute: FeatureFunction,
    bars: pd.DataFrame,
    cuts: int = 3,
    seed: int = 0,
    full: pd.DataFrame | None = None,
) -> None:
    """Fails if any feature value at time t depends on bars after t.

    Computes the features on the history cut at ``cuts`` random times; every value at or
    before a cut must equal the value computed on the full history (NaN equal to NaN).

    Args:
        compute: the feature function (bars in, ``symbol, ts`` and features out).
        bars: the full history.
        cuts: how many cut times to try.
        seed: picks the cut times.
        full: the features of the full history as they will be used (e.g. read from the
            store, whichever engine computed them); computed with ``compute`` when None.

    Raises:
        LookAheadError: naming the columns and the first time that changed.
    """
    if full is None:
        full = compute(bars)
    full = full.set_index(["symbol", "ts"]).sort_index()
    times = np.sort(bars["ts"].unique())
    if len(times) < 3:
        raise UserError("point-in-time check needs at least 3 distinct bar times")
    rng = np.random.default_rng(seed)
    for cut in np.sort(rng.choice(times[1:-1], size=min(cuts, len(times) - 2), replace=False)):
        past = compute(bars[bars["ts"] <= cut]).set_index(["symbol", "ts"]).sort_index()
        expected = full.reindex(past.index)[past.columns]
        changed = [
            column
            for column in past.columns
            if not np.array_equal(
                past[column].to_numpy(float), expected[column].to_numpy(float), equal_nan=True
            )
        ]
        if changed:
            raise LookAheadError(
                f"look-ahead: feature(s) {changed} at or before {pd.Timestamp(cut)} change when "
                "later bars are removed; a feature at t may only use bars up to t"
            )
