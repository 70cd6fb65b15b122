"""The offline store's SQL on the embedded engine (chdb, in this process; no servers)."""

import pandas as pd
import pyarrow as pa
import pytest

from ray_apps.config import Settings
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.stores import offline
from ray_apps.stores.offline import OfflineStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # chdb allows one engine folder per process: every test here shares this one.
    opened = OfflineStore(Settings(state_dir=tmp_path_factory.mktemp("state")))
    yield opened
    opened.close()


def bars(n_symbols=3, n_bars=50, seed=1, interval="1d"):
    return generate_bars(
        SyntheticSpec(n_symbols=n_symbols, n_bars=n_bars, seed=seed, interval=interval)
    )


def test_ingesting_twice_keeps_one_copy_and_the_latest_values(store):
    first = bars(seed=1).assign(symbol=lambda f: "DUP" + f["symbol"])
    store.insert_bars(first)
    store.insert_bars(first)
    again = first.assign(
        close=first["close"] * 1.01, high=first["high"] * 1.01
    )  # a corrected re-delivery
    store.insert_bars(again)
    stored = store.bars(sorted(first["symbol"].unique())).to_pandas()
    assert len(stored) == len(first)
    assert stored["close"].to_numpy() == pytest.approx(again["close"].to_numpy())


def test_round_trip_and_time_range(store):
    frame = bars(n_symbols=2, n_bars=30, seed=2).assign(symbol=lambda f: "RT" + f["symbol"])
    store.insert_bars(frame)
    one = frame[frame["symbol"] == "RTSYN0001"].reset_index(drop=True)
    start, end = one["ts"].iloc[5], one["ts"].iloc[10]
    got = store.bars(["RTSYN0001"], start, end)
    assert got.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    got = got.to_pandas()
    expected = one.iloc[5:10].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.astype(expected.dtypes.to_dict()), expected)


def test_symbols_and_latest(store):
    frame = bars(n_symbols=2, n_bars=20, seed=3, interval="1h").assign(
        symbol=lambda f: "LT" + f["symbol"]
    )
    store.insert_bars(frame)
    listing = store.symbols().to_pandas().set_index("symbol").loc[["LTSYN0000", "LTSYN0001"]]
    assert listing["bars"].tolist() == [20, 20]
    assert (listing["interval"] == "1h").all()
    assert listing["first_ts"].iloc[0] == frame["ts"].min()
    latest = store.latest(["LTSYN0000", "LTSYN0001"]).to_pandas()
    assert latest["ts"].tolist() == [frame["ts"].max()] * 2
    last = frame[frame["symbol"] == "LTSYN0000"].iloc[-1]
    assert latest.iloc[0]["close"] == last["close"]


def test_quarantine_is_kept_with_reasons(store):
    raw = pd.DataFrame(
        {
            "symbol": ["Q", "Q", ""],
            "ts": ["2024-01-02", "bad", "2024-01-04"],
            "open": ["1", "1", "1"],
            "high": ["2", "2", "2"],
            "low": ["1", "1", "1"],
            "close": ["1", "1", "1"],
            "volume": ["1", "1", "1"],
        }
    )
    result = validate_bars(raw, interval="1d")
    store.insert_quarantine(result.quarantined, "ing1", "test.csv")
    assert store.quarantine_counts("ing1") == {"unparseable_ts": 1, "missing_symbol": 1}
    rows = store.quarantine("ing1").to_pandas()
    assert sorted(rows["row_number"].tolist()) == [1, 2]
    assert set(rows["source"]) == {"test.csv"}


def _bars_parts(store) -> int:
    return store.client.query(
        f"SELECT count() FROM system.parts WHERE database = '{store.db}' AND table = 'bars' "
        "AND active"
    ).result_rows[0][0]


def test_a_bulk_load_holds_merges_off_until_it_ends(store, monkeypatch):
    store.client.command(f"OPTIMIZE TABLE {store.db}.bars FINAL")
    store.pause_merges("load-1")
    store.pause_merges("load-2")
    for seed in (11, 12, 13):
        frame = bars(n_symbols=1, n_bars=10, seed=seed).assign(symbol=f"BULK{seed}")
        store.insert_bars(frame, bulk_load="load-1")
    assert _bars_parts(store) == 4  # the merged part and three new ones
    with pytest.raises(Exception, match=r"(?i)cancel"):
        store.client.command(f"OPTIMIZE TABLE {store.db}.bars FINAL")
    store.resume_merges("load-1")  # load-2 still holds them off
    assert _bars_parts(store) == 4
    assert store.bars(symbols=["BULK11", "BULK12", "BULK13"]).num_rows == 30  # reads see all
    store.resume_merges("load-2")
    store.client.command(f"OPTIMIZE TABLE {store.db}.bars FINAL")
    assert _bars_parts(store) == 1
    # a load whose driver died stops holding merges off after MERGE_PAUSE_TTL_S
    monkeypatch.setattr(offline, "MERGE_PAUSE_TTL_S", 0.0)
    store.pause_merges("dead-driver")
    store.insert_bars(bars(n_symbols=1, n_bars=5, seed=14).assign(symbol="BULK14"))
    store.client.command(f"OPTIMIZE TABLE {store.db}.bars FINAL")
    assert _bars_parts(store) == 1
