import json

import numpy as np
import pandas as pd
import pytest

from ray_apps.marketdata.validation import REASONS, validate_bars

GOOD = {
    "symbol": "AAA",
    "ts": "2024-01-02",
    "open": "10",
    "high": "11",
    "low": "9",
    "close": "10.5",
    "volume": "100",
}


def frame(*overrides: dict) -> pd.DataFrame:
    rows = []
    for i, change in enumerate(overrides):
        row = dict(GOOD, ts=f"2024-01-{i + 2:02d}")
        row.update(change)
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"symbol": ""}, "missing_symbol", "symbol"),
        ({"ts": "yesterday-ish"}, "unparseable_ts", "ts"),
        ({"open": "nan"}, "non_finite_price", "open"),
        ({"close": "inf"}, "non_finite_price", "close"),
        ({"high": "abc"}, "non_finite_price", "high"),
        ({"low": "0", "open": "1", "close": "1"}, "non_positive_price", "low"),
        ({"open": "-2"}, "non_positive_price", "open"),
        ({"volume": "nan"}, "non_finite_volume", "volume"),
        ({"volume": "-1"}, "negative_volume", "volume"),
        ({"high": "10.2"}, "high_below_open_close", "high"),
        ({"low": "10.2"}, "low_above_open_close", "low"),
    ],
)
def test_each_rule_quarantines_with_reason_and_field(change, reason, field):
    result = validate_bars(frame({}, change, {}), interval="1d")
    assert len(result.accepted) == 2
    assert result.quarantined[["row_number", "reason", "field"]].values.tolist() == [
        [1, reason, field]
    ]
    assert reason in REASONS


def test_rows_are_split_never_lost_and_raw_values_are_kept():
    raw = frame({}, {"open": "x"}, {"volume": "-5"}, {})
    result = validate_bars(raw, interval="1d", first_row_number=100)
    assert len(result.accepted) + len(result.quarantined) == len(raw)
    assert result.quarantined["row_number"].tolist() == [101, 102]
    assert json.loads(result.quarantined["raw"].iloc[0])["open"] == "x"
    assert result.reason_counts() == {"non_finite_price": 1, "negative_volume": 1}


def test_duplicates_keep_the_first_occurrence():
    raw = frame({}, {}, {})
    raw.loc[2, "ts"] = raw.loc[0, "ts"]
    raw.loc[2, "close"] = "10.7"
    result = validate_bars(raw, interval="1d")
    assert result.quarantined["reason"].tolist() == ["duplicate_symbol_ts"]
    assert result.quarantined["row_number"].tolist() == [2]
    assert result.accepted["close"].tolist() == [10.5, 10.5]


def test_same_ts_on_other_symbols_or_intervals_is_not_a_duplicate():
    raw = pd.DataFrame(
        [
            dict(GOOD, interval="1d"),
            dict(GOOD, symbol="BBB", interval="1d"),
            dict(GOOD, interval="1h"),
        ]
    )
    assert len(validate_bars(raw).accepted) == 3


def test_unknown_column_quarantines_every_row():
    raw = frame({}, {})
    raw["adj_close"] = "1"
    result = validate_bars(raw, interval="1d")
    assert result.accepted.empty
    assert set(result.quarantined["reason"]) == {"unknown_column"}
    assert set(result.quarantined["field"]) == {"adj_close"}


def test_missing_required_column_fails_each_row():
    raw = frame({}, {}).drop(columns=["volume"])
    result = validate_bars(raw, interval="1d")
    assert result.reason_counts() == {"non_finite_volume": 2}


def test_invalid_interval_value():
    raw = pd.DataFrame([dict(GOOD, interval="1d"), dict(GOOD, ts="2024-01-03", interval="daily")])
    assert validate_bars(raw).reason_counts() == {"invalid_interval": 1}


def test_timestamps_become_utc_naive_taken_as_utc():
    raw = frame({"ts": "2024-01-02T10:00:00+02:00"}, {"ts": "2024-01-02 09:00:00"})
    ts = validate_bars(raw, interval="1h").accepted["ts"]
    assert str(ts.dt.tz) == "UTC"
    assert ts.tolist() == [
        pd.Timestamp("2024-01-02 08:00", tz="UTC"),
        pd.Timestamp("2024-01-02 09:00", tz="UTC"),
    ]


def test_interval_is_inferred_from_timestamps_when_not_given():
    raw = pd.DataFrame([dict(GOOD, ts=f"2024-01-02 10:{m:02d}") for m in (0, 15, 30, 45)])
    assert set(validate_bars(raw).accepted["interval"]) == {"15m"}


def test_typed_input_passes_through_with_store_dtypes():
    raw = pd.DataFrame(
        {
            "symbol": ["A"],
            "ts": [pd.Timestamp("2024-01-02", tz="UTC")],
            "open": [1.0],
            "high": [2.0],
            "low": [0.5],
            "close": [1.5],
            "volume": [np.float64(3)],
        }
    )
    accepted = validate_bars(raw, interval="1d").accepted
    assert list(accepted.columns) == [
        "symbol",
        "interval",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]
    assert accepted.iloc[0]["high"] == 2.0
