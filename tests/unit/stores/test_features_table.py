"""The features table on the embedded engine: one set of rows per spec version, coverage."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_apps.config import ClickHouseSettings, Settings
from ray_apps.stores.offline import OfflineStore

TIMES = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings(state_dir=tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def store(settings):
    # chdb allows one engine folder open per process at a time
    opened = OfflineStore(settings)
    yield opened
    opened.close()


def rows(symbol: str, **columns: list[float]) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({"symbol": [symbol] * n, "ts": pa.array(TIMES[:n]), **columns})


def test_two_specs_over_the_same_bars_keep_their_own_values(store):
    store.insert_features(rows("A", f=[1.0, 2.0, 3.0], g=[4.0, 5.0, 6.0]), "1d", "a", "fa")
    store.insert_features(rows("A", g=[7.0, 8.0, 9.0]), "1d", "b", "fb")
    first = store.features(["A"], spec_version="a", columns=["f", "g"]).to_pandas()
    assert first["f"].tolist() == [1.0, 2.0, 3.0]
    assert first["g"].tolist() == [4.0, 5.0, 6.0]
    assert set(first["fingerprint"]) == {"fa"}
    second = store.features(["A"], spec_version="b", columns=["g"]).to_pandas()
    assert second["g"].tolist() == [7.0, 8.0, 9.0]
    assert store.count_features("a") == 3 and store.count_features("b") == 3
    latest = store.features(["A"], columns=["g"], latest=True).to_pandas()
    assert latest[["spec_version", "g"]].values.tolist() == [["a", 6.0], ["b", 9.0]]


def test_coverage_counts_rows_of_one_version_and_fingerprint(store):
    store.insert_features(rows("C", h=[1.0, 2.0, 3.0, 4.0]), "1d", "c", "fc")
    store.insert_features(rows("D", h=[1.0, 2.0]), "1d", "c", "fc")
    store.insert_features(rows("E", h=[1.0]), "1d", "c", "edited")
    store.insert_features(rows("C", h=[1.0]), "15m", "c", "fc")
    coverage = store.feature_coverage("c", "fc", "1d").to_pandas()
    assert coverage["symbol"].tolist() == ["C", "D"]
    assert coverage["rows"].tolist() == [4, 2]
    assert coverage["first_ts"].tolist() == [TIMES[0], TIMES[0]]
    assert coverage["last_ts"].tolist() == [TIMES[3], TIMES[1]]
    assert store.feature_coverage("c", "fc", "1d", symbols=["D", "Z"])["symbol"].to_pylist() == [
        "D"
    ]
    assert store.feature_coverage("c", "fc", "1h").num_rows == 0


def test_a_table_of_the_old_key_is_converted_with_its_rows(store, settings):
    store.client.command("CREATE DATABASE IF NOT EXISTS legacy")
    store.client.command(
        "CREATE TABLE legacy.features (symbol LowCardinality(String), "
        "interval LowCardinality(String), ts DateTime64(6, 'UTC'), "
        "spec_version LowCardinality(String), "
        "computed_at DateTime64(3, 'UTC') DEFAULT now64(3), x Float64 DEFAULT nan) "
        "ENGINE = ReplacingMergeTree(computed_at) ORDER BY (symbol, interval, ts)"
    )
    store.client.command(
        "INSERT INTO legacy.features (symbol, interval, ts, spec_version, x) VALUES "
        "('A', '1d', '2024-01-01 00:00:00', '1', 0.5)"
    )
    legacy = OfflineStore(
        settings.model_copy(update={"clickhouse": ClickHouseSettings(database="legacy")})
    )
    key = store.client.command(
        "SELECT sorting_key FROM system.tables WHERE database = 'legacy' AND name = 'features'"
    )
    assert key == "spec_version, symbol, interval, ts"
    kept = legacy.features(spec_version="1").to_pandas()
    assert kept[["symbol", "x"]].values.tolist() == [["A", 0.5]]
    legacy.insert_features(rows("A", x=[np.nan]), "1d", "2", "f2")
    assert legacy.features(spec_version="1")["x"].to_pylist() == [0.5]


def test_dropping_one_version_keeps_the_others(store):
    store.insert_features(rows("K", k=[1.0, 2.0]), "1d", "drop-me", "f1")
    store.insert_features(rows("K", k=[3.0, 4.0]), "1d", "keep-me", "f2")
    store.drop_features("drop-me")
    assert store.count_features("drop-me") == 0
    assert store.features(["K"], spec_version="keep-me", columns=["k"])["k"].to_pylist() == [
        3.0,
        4.0,
    ]
