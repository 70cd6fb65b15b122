import pandas as pd
import pytest

from ray_apps.errors import UserError
from ray_apps.marketdata.schema import format_interval, infer_interval, parse_interval


@pytest.mark.parametrize(
    ("text", "seconds"), [("1d", 86400), ("15m", 900), ("1h", 3600), ("30s", 30), ("1w", 604800)]
)
def test_parse_interval(text, seconds):
    assert parse_interval(text).total_seconds() == seconds
    assert format_interval(parse_interval(text)) == text


@pytest.mark.parametrize("text", ["", "0m", "15", "m15", "1 d", "1y"])
def test_bad_interval_is_a_user_error(text):
    with pytest.raises(UserError, match="interval"):
        parse_interval(text)


def test_daily_bars_with_weekends_infer_1d():
    ts = pd.Series(pd.bdate_range("2024-01-01", periods=30, tz="UTC"))
    assert infer_interval(ts) == "1d"
