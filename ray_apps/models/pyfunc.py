"""A fitted model as an MLflow ``pyfunc``: raw feature rows in, one score per row out.

What a served model receives is the latest raw feature vector of each symbol (and, for window
models, the ``lookback`` dates before it), not the transformed panel it trained on. The wrapper
applies the same per-date cross-sectional transform as the training set, pivots the rows into a
panel and asks the model, so a score from ``models:/NAME@ALIAS`` is the score the sweep
evaluated.
"""

from __future__ import annotations

from typing import Any, Literal

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ray_apps.errors import UserError
from ray_apps.features.training_set import cross_section
from ray_apps.models.base import ScoreModel
from ray_apps.models.panel import Panel

FEATURE_SPEC_TAG = "feature_spec.version"
"""The model version tag naming the feature spec version its training features had."""


def model_input(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the form the logged schema takes: ``ts`` as time-zone-naive UTC."""
    ts = pd.to_datetime(rows["ts"], utc=True).dt.tz_convert(None)
    return rows.assign(ts=ts).reset_index(drop=True)


class ScorePyfunc(mlflow.pyfunc.PythonModel):
    """Scores ``symbol, ts, <features>`` rows with a fitted :class:`ScoreModel`.

    Args:
        model: the fitted model.
        normalize: the per-date transform its training features had.
        min_symbols: with a transform, dates with fewer symbols get no score.
    """

    def __init__(
        self,
        model: ScoreModel,
        normalize: Literal["none", "rank", "zscore"],
        min_symbols: int,
    ) -> None:
        self.model = model
        self.normalize = normalize
        self.min_symbols = min_symbols

    @property
    def feature_columns(self) -> list[str]:
        """The raw feature columns the input must have."""
        return list(self.model.feature_columns)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``symbol, ts, score`` for each input row, in input order.

        ``ts`` is read as UTC when it has no time zone and given back without one (MLflow's
        schemas hold time-zone-naive datetimes). The score is NaN where the model has no
        input: a feature undefined, fewer than the model's lookback dates of history for the
        symbol, or a date with too few symbols.

        Raises:
            UserError: a column is missing or a (symbol, ts) pair repeats.
        """
        return self.score(model_input)

    def score(self, rows: pd.DataFrame) -> pd.DataFrame:
        """:meth:`predict` without MLflow's arguments."""
        columns = self.feature_columns
        missing = [c for c in ["symbol", "ts", *columns] if c not in rows]
        if missing:
            raise UserError(f"model input: missing column(s) {missing}")
        frame = rows[["symbol", "ts", *columns]].copy()
        frame["symbol"] = frame["symbol"].astype(str)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        usable = frame.replace([np.inf, -np.inf], np.nan).dropna(subset=columns)
        usable = cross_section(usable, columns, self.normalize, self.min_symbols)
        scores = pd.Series(np.nan, index=frame.index)
        if not usable.empty:
            panel = Panel.from_frame(usable, columns)
            grid = self.model.predict(panel, np.arange(len(panel.dates)))
            d = panel.dates.get_indexer(usable["ts"])
            a = np.searchsorted(panel.symbols, usable["symbol"].to_numpy())
            scores.loc[usable.index] = grid[d, a]
        out = frame[["symbol", "ts"]].reset_index(drop=True)
        out["ts"] = out["ts"].dt.tz_convert(None)
        out["score"] = scores.to_numpy(dtype=np.float64)
        return out
