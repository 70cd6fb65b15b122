import pytest

from ray_apps.errors import UserError
from ray_apps.marketdata.loaders import load_arch, load_btc_15m, load_sp500_panel, sp500_sectors
from ray_apps.marketdata.sources import SyntheticSource, TableSource, parse_source
from ray_apps.marketdata.validation import validate_bars


def test_synthetic_spec_forms():
    source = parse_source("synthetic:20:500:15m", seed=3)
    assert isinstance(source, SyntheticSource)
    assert (source.spec.n_symbols, source.spec.n_bars, source.spec.interval) == (20, 500, "15m")
    assert source.spec.seed == 3
    assert parse_source("synthetic:2:10").spec.interval == "1d"


@pytest.mark.parametrize(
    "text",
    ["synthetic:10", "synthetic:a:10", "synthetic:0:10", "synthetic:1:1:1x", "nasdaq", "arch:dow"],
)
def test_bad_source_is_one_user_error(text):
    with pytest.raises(UserError) as err:
        parse_source(text)
    assert "\n" not in str(err.value)


def test_file_source_and_missing_file(tmp_path):
    source = parse_source(str(tmp_path / "nope.csv"))
    assert isinstance(source, TableSource)
    with pytest.raises(UserError, match="no such file"):
        list(source.read())


def test_packaged_index_data():
    sp500 = load_arch("sp500")
    assert len(sp500) == 5031
    assert set(sp500["symbol"]) == {"SP500"}
    result = validate_bars(sp500)
    assert result.quarantined.empty
    assert result.accepted["ts"].min().isoformat() == "1999-01-04T00:00:00+00:00"


def test_packaged_panel_has_524_symbols_and_real_bad_rows():
    panel = load_sp500_panel()
    assert panel["symbol"].nunique() == 524
    result = validate_bars(panel)
    # The package's own rows include highs below the open/close and lows above them.
    assert set(result.reason_counts()) <= {"high_below_open_close", "low_above_open_close"}
    assert len(result.accepted) + len(result.quarantined) == len(panel)


def test_btc_bars_are_15_minutes_in_utc():
    result = validate_bars(load_btc_15m())
    assert set(result.accepted["interval"]) == {"15m"}
    assert str(result.accepted["ts"].dt.tz) == "UTC"


def test_sector_metadata():
    sectors = sp500_sectors()
    assert {"symbol", "sector", "industry"} <= set(sectors.columns)
    assert sectors.set_index("symbol").loc["MMM", "sector"] == "Industrials"
