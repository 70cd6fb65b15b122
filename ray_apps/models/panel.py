"""The dense (date x asset x feature) panel every model reads.

A point-in-time training set (one row per symbol and date) is pivoted once into arrays so a
model can take a row (one asset on one date), a window (one asset over the ``lookback`` dates
ending at a date) or a cross-section (every asset on one date) by indexing, with no copying
per epoch. Features at date ``d`` were computed from bars up to ``d`` and targets come from
after ``d``, so a window ending at ``d`` may reach back into earlier dates of any split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ray_apps.errors import UserError


@dataclass(frozen=True)
class Panel:
    """Features, targets and returns of a panel of assets on a calendar of dates.

    Attributes:
        dates: the D dates, ascending (UTC timestamps).
        symbols: the A symbols.
        feature_columns: the F feature names, in the order of the last axis of ``features``.
        features: float32 [D, A, F]; NaN where a symbol has no row or a feature is undefined.
        target: float32 [D, A], what models learn to score (the label, possibly ranked or
            z-scored per date); NaN where undefined.
        returns: float64 [D, A], the raw forward return evaluated for portfolios (log return
            over the next bar); NaN where undefined.
        forward_return: float64 [D, A], the raw log return over the label's horizon (the
            untransformed target), what IC and directional accuracy are measured against;
            NaN where undefined.
        groups: per classification level (``sector``, ``industry``), the [A] group label of
            each symbol ("" where unknown); empty when the data carries no classification.
    """

    dates: pd.DatetimeIndex
    symbols: np.ndarray
    feature_columns: tuple[str, ...]
    features: np.ndarray
    target: np.ndarray
    returns: np.ndarray
    forward_return: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        feature_columns: list[str] | tuple[str, ...],
        target_column: str | None = None,
        return_column: str | None = None,
        forward_return_column: str | None = None,
        groups: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Panel:
        """Pivots ``symbol, ts`` rows into a panel.

        Args:
            frame: one row per (symbol, ts) with the feature columns (and the target and
                return columns when named).
            feature_columns: the model inputs, in order.
            target_column: the column to learn (all NaN when None, e.g. for prediction).
            return_column: the raw next-bar return (all NaN when None).
            forward_return_column: the raw return over the label's horizon (all NaN when
                None).
            groups: per classification level, the group of each symbol (symbols it does
                not name get "").

        Raises:
            UserError: a column is missing or a (symbol, ts) pair repeats.
        """
        named = [c for c in (target_column, return_column, forward_return_column) if c is not None]
        missing = [c for c in ["symbol", "ts", *feature_columns, *named] if c not in frame]
        if missing:
            raise UserError(f"panel: missing column(s) {missing}")
        if frame.duplicated(["symbol", "ts"]).any():
            raise UserError("panel: (symbol, ts) pairs repeat; one row per symbol and date")
        dates = pd.DatetimeIndex(np.sort(frame["ts"].unique()))
        symbols = np.sort(frame["symbol"].astype(str).unique())
        d = dates.get_indexer(frame["ts"])
        a = np.searchsorted(symbols, frame["symbol"].astype(str).to_numpy())
        shape = (len(dates), len(symbols))
        features = np.full((*shape, len(feature_columns)), np.nan, dtype=np.float32)
        features[d, a] = frame[list(feature_columns)].to_numpy(dtype=np.float32)
        target = np.full(shape, np.nan, dtype=np.float32)
        if target_column is not None:
            target[d, a] = frame[target_column].to_numpy(dtype=np.float32)
        returns, forward_return = (
            _column(frame, column, d, a, shape) for column in (return_column, forward_return_column)
        )
        levels = {
            level: np.array([str(labels.get(s, "")) for s in symbols], dtype=object)
            for level, labels in (groups or {}).items()
        }
        return cls(
            dates,
            symbols,
            tuple(feature_columns),
            features,
            target,
            returns,
            forward_return,
            levels,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(dates, assets, features)."""
        return self.features.shape

    def defined(self) -> np.ndarray:
        """Mask [D, A]: every feature of the asset is defined on the date."""
        return np.isfinite(self.features).all(axis=2)

    def window_defined(self, lookback: int) -> np.ndarray:
        """Mask [D, A]: features are defined on the ``lookback`` dates ending at each date."""
        defined = self.defined().astype(np.int32)
        run = np.cumsum(defined, axis=0)
        full = np.zeros_like(defined, dtype=bool)
        if lookback <= len(self.dates):
            window = run[lookback - 1 :].copy()
            window[1:] -= run[: len(self.dates) - lookback]
            full[lookback - 1 :] = window == lookback
        return full

    def samples(
        self, dates: np.ndarray, lookback: int = 1, need_target: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(date index, asset index) of every sample on ``dates``, in date order.

        A sample needs its whole input window defined and, to train on, a defined target.
        """
        usable = self.window_defined(lookback)
        if need_target:
            usable &= np.isfinite(self.target)
        mask = np.zeros(len(self.dates), dtype=bool)
        mask[dates] = True
        return np.nonzero(usable & mask[:, None])

    def scores_frame(self, scores: np.ndarray, dates: np.ndarray) -> pd.DataFrame:
        """``symbol, ts, score`` rows of a [len(dates), A] score array (undefined ones dropped)."""
        d, a = np.nonzero(np.isfinite(scores))
        return pd.DataFrame(
            {
                "symbol": self.symbols[a],
                "ts": self.dates[np.asarray(dates)[d]],
                "score": scores[d, a].astype(np.float64),
            }
        )


def _column(
    frame: pd.DataFrame, column: str | None, d: np.ndarray, a: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """float64 [D, A] of ``column`` at (d, a), NaN elsewhere (all NaN when None)."""
    out = np.full(shape, np.nan, dtype=np.float64)
    if column is not None:
        out[d, a] = frame[column].to_numpy(dtype=np.float64)
    return out
