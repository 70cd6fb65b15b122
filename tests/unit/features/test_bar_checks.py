"""Bad bars never reach the kernels: the bar rules on arrays, the batch and incremental engines."""

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feature_references import talib_reference

from ray_apps.features.bar_checks import VALUE_REASONS, bar_verdicts, check_bars, reason_counts
from ray_apps.features.batch import compute_checked, compute_table
from ray_apps.features.engines.incremental import IncrementalEngine, replay
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.loaders import load_arch
from ray_apps.marketdata.validation import REASONS, validate_bars

SPEC = load_spec()
WARMUP = 250
BAD_ROW = 1000
KEYS = [("symbol", "ascending"), ("ts", "ascending")]


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_arch("sp500").iloc[:2000].reset_index(drop=True)


def with_bad_bar(series: pd.DataFrame, column: str = "close", value: float = np.nan):
    bad = series.copy()
    bad.loc[BAD_ROW, column] = value
    return pa.Table.from_pandas(bad, preserve_index=False)


def cleaned(series: pd.DataFrame) -> pd.DataFrame:
    return series.drop(index=BAD_ROW).reset_index(drop=True)


def assert_identical(left: pa.Table, right: pa.Table) -> None:
    assert left.column("symbol").to_pylist() == right.column("symbol").to_pylist()
    assert left.column("ts").equals(right.column("ts"))
    for column in SPEC.columns:
        a, b = left.column(column).to_numpy(), right.column(column).to_numpy()
        assert np.array_equal(a, b, equal_nan=True), column


def test_reason_names_are_the_ingest_ones_in_its_order():
    assert list(VALUE_REASONS) == [r for r in REASONS if r in VALUE_REASONS]


def test_verdicts_equal_validate_bars_on_every_value_rule():
    good = {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100.0}
    variants = [
        {},
        {"close": np.nan},
        {"high": np.inf},
        {"open": -np.inf},
        {"low": 0.0},
        {"close": -1.0},
        {"volume": np.nan},
        {"volume": -1.0},
        {"high": 10.2},
        {"low": 10.1},
        {"open": 12.0},
        {"close": 8.0},
        {"close": np.nan, "volume": -1.0},
        {"high": 0.0, "low": 20.0},
        {"volume": 0.0},
    ]
    raw = pd.DataFrame([good | v for v in variants])
    raw.insert(0, "ts", pd.date_range("2024-01-01", periods=len(raw), freq="D", tz="UTC"))
    raw.insert(0, "symbol", "X")
    quarantined = validate_bars(raw, interval="1d").quarantined
    expected = [""] * len(raw)
    for row, reason in zip(quarantined["row_number"], quarantined["reason"], strict=True):
        expected[int(row)] = reason
    codes = bar_verdicts(
        *(raw[c].to_numpy() for c in ("high", "low", "close", "volume")),
        open_=raw["open"].to_numpy(),
    )
    names = np.array(["", *VALUE_REASONS], dtype=object)[codes]
    assert names.tolist() == expected
    assert reason_counts(codes) == validate_bars(raw, interval="1d").reason_counts()


def test_check_bars_keeps_the_good_bars_and_counts_the_others():
    table = pa.table(
        {
            "symbol": ["A", "A", None, "A"],
            "ts": pa.array([1, 2, 3, None], pa.timestamp("us", tz="UTC")),
            "high": [2.0, 2.0, 2.0, 2.0],
            "low": [1.0, 1.0, 1.0, 1.0],
            "close": [1.5, float("nan"), 1.5, 1.5],
            "volume": [1.0, 1.0, 1.0, 1.0],
        }
    )
    good, rejected = check_bars(table)
    assert good.column("ts").to_pylist() == table.column("ts").to_pylist()[:1]
    assert rejected == {"non_finite_price": 1, "missing_symbol": 1, "unparseable_ts": 1}


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", np.nan, "non_finite_price"),
        ("close", np.inf, "non_finite_price"),
        ("low", -5.0, "non_positive_price"),
        ("volume", -1.0, "negative_volume"),
    ],
)
def test_batch_engine_leaves_a_bad_bar_out(series, column, value, reason):
    features, rejected = compute_checked(with_bad_bar(series, column, value), SPEC)
    assert rejected == {reason: 1}
    expected = compute_table(pa.Table.from_pandas(cleaned(series), preserve_index=False), SPEC)
    assert_identical(features, expected)


def test_batch_values_after_a_nan_close_match_talib_on_the_cleaned_series(series):
    features, _ = compute_checked(with_bad_bar(series), SPEC)
    reference = talib_reference(cleaned(series))
    after = slice(BAD_ROW, None)  # rows after the removed bar, all past the warm-up
    for column in SPEC.columns:
        ours = features.column(column).to_numpy()[after]
        theirs = np.asarray(reference[column], dtype=float)[after]
        assert not np.isnan(ours).any(), column
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9, err_msg=column)


def test_incremental_engine_refuses_a_nan_close_and_matches_the_cleaned_series(series):
    engine = IncrementalEngine(SPEC)
    out = pa.concat_tables(replay(engine, with_bad_bar(series))).sort_by(KEYS)
    assert engine.rejected == {"non_finite_price": 1}
    expected = compute_table(pa.Table.from_pandas(cleaned(series), preserve_index=False), SPEC)
    assert_identical(out, expected.sort_by(KEYS))


def saved_state(engine: IncrementalEngine) -> dict[str, np.ndarray]:
    """The arrays a checkpoint holds, as a restored engine has them."""
    restored = IncrementalEngine.restore(engine.save(), SPEC)
    count = len(restored.symbols)
    return {
        "symbols": np.array(restored.symbols, dtype=object),
        "states": restored._states[:count],
        "last_ts": restored._last_ts[:count],
        "latest": restored._latest[:count],
    }


def test_a_refused_bar_leaves_the_state_as_it_was_and_the_batch_goes_on(series):
    table = pa.Table.from_pandas(series, preserve_index=False)
    engine = IncrementalEngine(SPEC)
    engine.update(table.slice(0, 300))
    before = saved_state(engine)
    bad = table.slice(300, 1).to_pandas()
    bad["high"] = bad["close"] * 0.5  # high below the close
    engine.update(pa.Table.from_pandas(bad, preserve_index=False))
    after = saved_state(engine)
    for key, values in before.items():
        floats = values.dtype.kind == "f"
        assert np.array_equal(values, after[key], equal_nan=floats), key
    assert engine.rejected == {"high_below_open_close": 1}

    other = table.slice(300, 1).to_pandas().assign(symbol="OTHER")
    bad_new = other.assign(symbol="NEW", close=-1.0)  # a new symbol's first bar, refused
    batch = pd.concat([bad.assign(close=np.nan), other, bad_new], ignore_index=True)
    applied = engine.update(pa.Table.from_pandas(batch, preserve_index=False))
    assert applied.column("symbol").to_pylist() == ["OTHER"]
    assert engine.symbols[1:] == ["OTHER"]  # NEW's only bar was refused: not registered
    assert engine.rejected == {
        "high_below_open_close": 1,
        "non_finite_price": 1,
        "non_positive_price": 1,
    }
    restored = IncrementalEngine.restore(engine.save(), SPEC)
    assert restored.rejected == engine.rejected
