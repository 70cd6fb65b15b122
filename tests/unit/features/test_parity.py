"""The batch engine against TA-Lib and pandas-ta-classic on real packaged data."""

import warnings

import numpy as np
import pandas as pd
import pytest
from feature_references import pandas_ta_reference, talib_reference

from ray_apps.features.batch import compute_frame
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.loaders import load_arch, load_btc_15m, load_sp500_panel
from ray_apps.marketdata.validation import validate_bars

WARMUP = 250
RTOL = 1e-9  # against TA-Lib: the same arithmetic, rounding apart
# Columns that subtract nearly equal numbers (a sum of squares minus the squared mean, then the
# close minus a band): one rounding apart grows to about 2e-8 where a window is nearly flat.
CANCELLING = {"bb_pctb_20_2", "bb_width_20_2", "zclose_20", "zvolume_20"}
CANCELLING_RTOL = 5e-8
PANDAS_TA_RTOL = 1e-6  # pandas-ta-classic's own pandas arithmetic (rolling sums, its seeding)
SPEC = load_spec()
# Columns whose pandas-ta-classic definition has no recursive seeding: equal from the start.
NON_RECURSIVE = [
    "logret_1",
    "logret_5",
    "sma_20",
    "ema_20",
    "bb_upper_20_2",
    "bb_middle_20_2",
    "bb_lower_20_2",
    "bb_pctb_20_2",
    "bb_width_20_2",
    "obv",
    "vol_20",
    "zclose_20",
    "zvolume_20",
    "stoch_k_14_3",
    "stoch_d_14_3",
]


def assert_close(
    actual: np.ndarray, expected: np.ndarray, column: str, rtol: float | None = None
) -> None:
    """Relative error at most ``rtol``, relative to |expected| floored at 0.1% of its mean size.

    ``rtol`` defaults to the TA-Lib tolerance of the column.
    """
    if rtol is None:
        rtol = CANCELLING_RTOL if column.split()[-1] in CANCELLING else RTOL
    defined = ~np.isnan(expected)
    assert defined.any(), column
    scale = np.maximum(np.abs(expected[defined]), 1e-3 * np.mean(np.abs(expected[defined])))
    error = np.abs(actual[defined] - expected[defined]) / scale
    worst = int(np.argmax(error))
    assert error[worst] <= rtol, f"{column}: relative error {error[worst]:.2e} at row {worst}"


@pytest.fixture(scope="module")
def series() -> dict[str, pd.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "sp500": load_arch("sp500"),
            "btc-15m": validate_bars(load_btc_15m()).accepted.reset_index(drop=True),
        }


@pytest.mark.parametrize("name", ["sp500", "btc-15m"])
@pytest.mark.parametrize("library", ["talib", "pandas-ta-classic"])
def test_every_column_matches_after_warmup(series, name, library):
    bars = series[name]
    ours = compute_frame(bars, SPEC)
    reference = (talib_reference if library == "talib" else pandas_ta_reference)(bars)
    rtol = None if library == "talib" else PANDAS_TA_RTOL
    for column in SPEC.columns:
        assert_close(ours[column].to_numpy()[WARMUP:], reference[column][WARMUP:], column, rtol)


@pytest.mark.parametrize("name", ["sp500", "btc-15m"])
def test_warmup_nans_where_talib_has_them(series, name):
    bars = series[name]
    ours = compute_frame(bars, SPEC)
    reference = talib_reference(bars)
    for column in SPEC.columns:
        theirs = np.isnan(reference[column][:300])
        assert np.array_equal(np.isnan(ours[column].to_numpy()[:300]), theirs), column
    assert not ours[SPEC.columns].iloc[: SPEC.warmup].eq(0.0).all(axis=1).any()


def test_panel_every_symbol_matches_talib_from_its_first_value():
    """524 stocks of about 245 bars: TA-Lib's conventions hold from the first defined bar."""
    panel = validate_bars(load_sp500_panel()).accepted
    ours = compute_frame(panel, SPEC)
    assert ours["symbol"].nunique() == 524
    for symbol, bars in panel.sort_values(["symbol", "ts"]).groupby("symbol", sort=True):
        mine = ours[ours["symbol"] == symbol]
        reference = talib_reference(bars)
        for column in SPEC.columns:
            expected = reference[column]
            assert np.array_equal(np.isnan(mine[column].to_numpy()), np.isnan(expected)), (
                symbol,
                column,
            )
            if np.isnan(expected).all():
                continue
            assert_close(mine[column].to_numpy(), expected, f"{symbol} {column}")


def test_panel_matches_pandas_ta_on_non_recursive_columns():
    """pandas-ta-classic seeds Wilder/MACD smoothing differently: those converge only after
    about 250 bars, longer than the panel's series, and are checked on the long series above."""
    panel = validate_bars(load_sp500_panel()).accepted
    ours = compute_frame(panel, SPEC)
    for symbol in ["AAPL", "MSFT", "XOM", "JPM", "GE"]:
        bars = panel[panel["symbol"] == symbol].sort_values("ts")
        mine = ours[ours["symbol"] == symbol]
        reference = pandas_ta_reference(bars)
        for column in NON_RECURSIVE:
            actual, expected = mine[column].to_numpy(), reference[column].copy()
            # pandas-ta-classic starts %K two bars before TA-Lib (whose warm-up is checked above)
            expected[np.isnan(actual)] = np.nan
            assert (~np.isnan(expected)).sum() >= 200, (symbol, column)
            assert_close(actual, expected, f"{symbol} {column}", PANDAS_TA_RTOL)
