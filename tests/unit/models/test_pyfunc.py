"""The pyfunc wrapper scores raw feature rows exactly as the model scores the training panel."""

import numpy as np
import pandas as pd
import pytest
from packaged_training_data import packaged_training_data

from ray_apps.errors import UserError
from ray_apps.models.catalog import build_model
from ray_apps.models.pyfunc import ScorePyfunc, model_input

SYMBOLS = ["XOM", "JPM", "GE", "IBM", "KO", "PFE", "WMT", "CVX", "AAPL", "MSFT"]


@pytest.fixture(scope="module")
def data():
    return packaged_training_data(SYMBOLS, horizon=1)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ridge", {}),
        ("lstm", {"epochs": 1, "lookback": 5}),
        ("gat", {"epochs": 1, "hidden": 8, "heads": 2, "edges": "sector"}),
    ],
)
def test_raw_rows_score_as_the_panel(data, name, params):
    panel = data.panel
    model = build_model(name, params, panel.feature_columns)
    model.fit(panel, np.arange(100))
    dates = np.arange(100, len(panel.dates))
    expected = panel.scores_frame(model.predict(panel, dates), dates)
    rows = model_input(data.feature_rows)
    scored = ScorePyfunc(model, "rank", 5).predict(None, rows)
    assert len(scored) == len(rows)
    assert (scored["symbol"].to_numpy() == rows["symbol"].to_numpy()).all()
    scored["ts"] = pd.to_datetime(scored["ts"]).dt.tz_localize("UTC")
    both = expected.merge(scored, on=["symbol", "ts"], suffixes=("", "_pyfunc"))
    assert len(both) == len(expected) > 500
    np.testing.assert_allclose(both["score_pyfunc"], both["score"], rtol=1e-6, atol=1e-9)


def test_too_little_history_scores_nan_and_missing_columns_are_named(data):
    panel = data.panel
    model = build_model("lstm", {"epochs": 1, "lookback": 5}, panel.feature_columns)
    model.fit(panel, np.arange(60))
    last = data.feature_rows[data.feature_rows["ts"] >= panel.dates[-3]]
    scored = ScorePyfunc(model, "rank", 5).score(last)
    assert scored["score"].isna().all()  # 3 dates of history, the model reads 5
    with pytest.raises(UserError, match=r"missing column\(s\) \['rsi_14'\]"):
        ScorePyfunc(model, "rank", 5).score(last.drop(columns="rsi_14"))
