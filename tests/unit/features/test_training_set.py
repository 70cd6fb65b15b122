"""Labels, point-in-time training rows and the look-ahead check."""

import numpy as np
import pandas as pd
import pytest

from ray_apps.features.batch import compute_frame
from ray_apps.features.spec import load_spec
from ray_apps.features.training_set import (
    LookAheadError,
    TrainingSetConfig,
    build_training_set,
    check_point_in_time,
    forward_returns,
)
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def tiny_bars() -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    return pd.DataFrame(
        {
            "symbol": ["A"] * 4 + ["B"] * 4,
            "ts": list(ts) * 2,
            "close": [100.0, 110.0, 99.0, 120.0, 10.0, 10.0, 12.0, 6.0],
        }
    )


def test_forward_returns_by_hand():
    labels = forward_returns(tiny_bars(), [1, 2])
    a = labels[labels["symbol"] == "A"]
    np.testing.assert_allclose(a["label_1"][:3], np.log([110 / 100, 99 / 110, 120 / 99]))
    np.testing.assert_allclose(a["label_2"][:2], np.log([99 / 100, 120 / 110]))
    assert a["label_1"].isna().tolist() == [False, False, False, True]
    b = labels[labels["symbol"] == "B"]  # never reaches into A's series
    np.testing.assert_allclose(b["label_2"][:2], np.log([12 / 10, 6 / 10]))
    assert b["label_2"].isna().tolist() == [False, False, True, True]


def test_training_rows_have_defined_features_and_labels_only():
    bars = generate_bars(SyntheticSpec(n_symbols=8, n_bars=120))
    rows = build_training_set(bars, compute_frame(bars, SPEC), TrainingSetConfig(horizons=[1, 5]))
    assert not rows.isna().any().any()
    per_symbol = rows.groupby("symbol").size()
    assert (per_symbol == 120 - SPEC.warmup - 5).all()  # warm-up and the last 5 bars dropped
    closes = bars.set_index(["symbol", "ts"])["close"]
    row = rows.iloc[100]
    later = closes.loc[row["symbol"]]
    t = later.index.get_loc(row["ts"])
    assert row["label_5"] == pytest.approx(np.log(later.iloc[t + 5] / later.iloc[t]))


def test_cross_sectional_rank_and_zscore_per_date():
    bars = generate_bars(SyntheticSpec(n_symbols=10, n_bars=80))
    features = compute_frame(bars, SPEC)
    ranked = build_training_set(bars, features, TrainingSetConfig(normalize="rank"))
    one_date = ranked[ranked["ts"] == ranked["ts"].iloc[0]]
    assert sorted(one_date["rsi_14"]) == pytest.approx([(i + 1) / 10 for i in range(10)])
    scored = build_training_set(bars, features, TrainingSetConfig(normalize="zscore"))
    by_date = scored.groupby("ts")["macd_12_26_9"]
    assert np.allclose(by_date.mean(), 0, atol=1e-12)
    assert np.allclose(by_date.std(ddof=0), 1)


def test_engine_features_pass_the_point_in_time_check():
    bars = generate_bars(SyntheticSpec(n_symbols=3, n_bars=200))
    check_point_in_time(lambda b: compute_frame(b, SPEC), bars, cuts=5)


def test_a_feature_built_from_the_future_is_detected():
    bars = generate_bars(SyntheticSpec(n_symbols=3, n_bars=200))

    def leaky(b: pd.DataFrame) -> pd.DataFrame:
        features = compute_frame(b, SPEC)
        b = b.sort_values(["symbol", "ts"])
        features["next_close"] = b.groupby("symbol")["close"].shift(-1).to_numpy()
        return features

    with pytest.raises(LookAheadError, match=r"\['next_close'\]"):
        check_point_in_time(leaky, bars, cuts=3)


def test_a_centred_window_is_detected_too():
    bars = generate_bars(SyntheticSpec(n_symbols=2, n_bars=100))

    def centred(b: pd.DataFrame) -> pd.DataFrame:
        b = b.sort_values(["symbol", "ts"]).reset_index(drop=True)
        out = b[["symbol", "ts"]].copy()
        out["centred_mean"] = b.groupby("symbol")["close"].transform(
            lambda x: x.rolling(5, center=True).mean()
        )
        return out

    with pytest.raises(LookAheadError, match="centred_mean"):
        check_point_in_time(centred, bars)
