import pandas as pd
import pytest

from ray_apps.errors import UserError
from ray_apps.marketdata.columns import map_columns
from ray_apps.marketdata.loaders import read_file
from ray_apps.marketdata.validation import validate_bars

YAHOO = "Date,Open,High,Low,Close,Adj Close,Volume"


def test_price_download_layout_maps_with_symbol_and_drops_adj_close():
    mapping = map_columns(YAHOO.split(","), "SPY", "spy.csv")
    raw = pd.DataFrame(
        [["2024-01-02", "10", "11", "9", "10.5", "9.9", "100"]], columns=YAHOO.split(",")
    )
    frame = mapping.apply(raw)
    assert list(frame.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert frame.iloc[0].tolist() == ["SPY", "2024-01-02", "10", "11", "9", "10.5", "100"]


@pytest.mark.parametrize(
    "header",
    [
        "symbol,ts,open,high,low,close,volume",
        "SYMBOL,DATE,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "Symbol,Datetime,Open,High,Low,Close,Volume",
        " symbol , timestamp ,open,high,low,close,volume",
        "ticker,time,open,high,low,close,volume",
    ],
)
def test_common_layouts_map_whatever_the_case(header):
    mapping = map_columns(header.split(","), None, "f.csv")
    assert sorted(mapping.rename.values()) == sorted(
        ["symbol", "ts", "open", "high", "low", "close", "volume"]
    )


def test_missing_symbol_without_option_says_to_pass_symbol():
    with pytest.raises(UserError) as err:
        map_columns(YAHOO.split(","), None, "spy.csv")
    assert str(err.value) == (
        "spy.csv has no symbol column: pass --symbol SYMBOL to name the one symbol it holds"
    )


def test_symbol_option_with_a_symbol_column_is_refused():
    with pytest.raises(UserError, match="has a symbol column: drop --symbol"):
        map_columns(["symbol", "ts", "open", "high", "low", "close", "volume"], "X", "f.csv")


def test_unmappable_columns_name_what_was_found_and_what_is_needed():
    with pytest.raises(UserError) as err:
        map_columns(["Day", "Price", "Vol"], "X", "f.csv")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("f.csv: cannot map columns Day, Price, Vol to bars: need ")
    assert "ts (ts/date/datetime/timestamp/time)" in message
    assert message.endswith("missing ts, open, high, low, close, volume")


def test_two_columns_for_one_field_are_refused():
    with pytest.raises(UserError, match="columns 'Date' and 'Datetime' both map to 'ts'"):
        map_columns(["Date", "Datetime", "Open", "High", "Low", "Close", "Volume"], "X", "f")


def test_extra_columns_stay_and_are_quarantined_as_unknown():
    mapping = map_columns([*YAHOO.split(","), "Dividends"], "X", "f.csv")
    assert mapping.rename.get("Dividends") is None and "Dividends" not in mapping.drop


def test_yahoo_csv_file_reads_and_validates(tmp_path):
    path = tmp_path / "spy.csv"
    path.write_text(
        YAHOO + "\n2024-01-02,472.16,473.67,470.49,472.65,466.71,123623700\n"
        "2024-01-03,470.43,471.19,468.17,468.79,462.90,103585900\n"
    )
    chunks = list(read_file(path, symbol="SPY"))
    result = validate_bars(chunks[0])
    assert result.quarantined.empty
    assert result.accepted["symbol"].tolist() == ["SPY", "SPY"]
    assert result.accepted["close"].tolist() == [472.65, 468.79]  # the traded close, not Adj
    assert set(result.accepted["interval"]) == {"1d"}


def test_parquet_file_is_mapped_too(tmp_path):
    path = tmp_path / "bars.parquet"
    pd.DataFrame(
        {
            "Datetime": ["2024-01-02 10:00", "2024-01-02 11:00"],
            "Open": [1.0, 1.0],
            "High": [2.0, 2.0],
            "Low": [0.5, 0.5],
            "Close": [1.5, 1.5],
            "Volume": [3.0, 3.0],
        }
    ).to_parquet(path)
    result = validate_bars(next(read_file(path, symbol="BTC")))
    assert result.accepted["symbol"].tolist() == ["BTC", "BTC"]
    assert set(result.accepted["interval"]) == {"1h"}
