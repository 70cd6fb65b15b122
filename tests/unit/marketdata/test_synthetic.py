import numpy as np
import pandas as pd
import pytest

from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars, regime_path
from ray_apps.marketdata.validation import validate_bars


def test_ohlc_is_consistent_and_positive():
    bars = generate_bars(SyntheticSpec(n_symbols=5, n_bars=3000, seed=1))
    assert (bars["high"] >= np.maximum(bars["open"], bars["close"])).all()
    assert (bars["low"] <= np.minimum(bars["open"], bars["close"])).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert (bars["volume"] >= 0).all()
    assert validate_bars(bars, "1d").quarantined.empty


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7])
def test_pairwise_correlation_is_close_to_the_requested_one(rho):
    spec = SyntheticSpec(n_symbols=12, n_bars=6000, correlation=rho, seed=3)
    closes = generate_bars(spec).pivot(index="ts", columns="symbol", values="close")
    corr = np.log(closes).diff().dropna().corr().to_numpy()
    mean_pairwise = corr[np.triu_indices_from(corr, k=1)].mean()
    assert mean_pairwise == pytest.approx(rho, abs=0.04)


def test_same_seed_same_bars_other_seed_other_bars():
    spec = SyntheticSpec(n_symbols=3, n_bars=200, seed=11)
    pd.testing.assert_frame_equal(generate_bars(spec), generate_bars(spec))
    other = generate_bars(spec.model_copy(update={"seed": 12}))
    assert not np.allclose(other["close"], generate_bars(spec)["close"])


def test_blocks_generated_apart_equal_the_whole():
    spec = SyntheticSpec(n_symbols=6, n_bars=100, seed=5)
    parts = pd.concat([generate_bars(spec, 0, 2), generate_bars(spec, 2, 4)], ignore_index=True)
    pd.testing.assert_frame_equal(parts, generate_bars(spec))


def test_stressed_regime_has_higher_volatility():
    spec = SyntheticSpec(n_symbols=8, n_bars=8000, seed=2, stress_multiplier=3.0)
    scale = regime_path(spec)
    assert 0.2 < (scale > 1).mean() < 0.8
    closes = generate_bars(spec).pivot(index="ts", columns="symbol", values="close")
    returns = np.log(closes).diff().to_numpy()[1:]
    stressed = scale[1:] > 1
    ratio = returns[stressed].std() / returns[~stressed].std()
    assert ratio == pytest.approx(3.0, rel=0.15)


def test_intraday_timestamps_are_evenly_spaced_utc():
    spec = SyntheticSpec(n_symbols=1, n_bars=10, interval="15m", start="2024-03-01 09:30")
    ts = generate_bars(spec)["ts"]
    assert ts.iloc[0] == pd.Timestamp("2024-03-01 09:30", tz="UTC")
    assert (ts.diff().dropna() == pd.Timedelta(minutes=15)).all()


def test_daily_bars_fall_on_business_days():
    ts = generate_bars(SyntheticSpec(n_symbols=1, n_bars=30))["ts"]
    assert (ts.dt.day_of_week < 5).all()


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="correlation"):
        SyntheticSpec(n_symbols=1, n_bars=10, correlation=1.5)
