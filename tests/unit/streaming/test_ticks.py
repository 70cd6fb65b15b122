"""Ticks synthesized from bars, and aggregated back into bars (pandas ``resample``: reference)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_apps.marketdata.schema import BAR_SCHEMA, bars_table
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.streaming.ticks import TICK_SCHEMA, BarAggregator, synthesize_ticks


def _random_ticks(seed: int, n: int = 4000) -> pa.Table:
    """Trades of 5 symbols over a few hours with gaps, in time order (ties at equal times)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-02 09:00", tz="UTC").value // 1000
    steps = rng.choice(
        [0, 1_000, 700_000, 20_000_000, 600_000_000], size=n, p=[0.1, 0.3, 0.4, 0.15, 0.05]
    )
    ts = start + np.cumsum(steps)
    return pa.table(
        {
            "symbol": pa.array(rng.choice(["A", "BB", "C-1", "D", "E"], size=n)),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "price": rng.uniform(10, 20, n).round(2),
            "size": rng.integers(1, 500, n).astype(float),
        },
        schema=TICK_SCHEMA,
    )


def _resampled(ticks: pa.Table, interval: str, rule: str) -> pd.DataFrame:
    frame = ticks.to_pandas()
    parts = []
    for symbol, group in frame.groupby("symbol"):
        bars = (
            group.set_index("ts")
            .resample(rule)
            .agg({"price": ["first", "max", "min", "last"], "size": "sum"})
        )
        bars.columns = ["open", "high", "low", "close", "volume"]
        bars = bars.dropna(subset=["open"]).reset_index()
        bars.insert(0, "symbol", symbol)
        parts.append(bars)
    expected = pd.concat(parts).sort_values(["ts", "symbol"]).reset_index(drop=True)
    expected.insert(1, "interval", interval)
    return expected


def _feed(ticks: pa.Table, interval: str, cuts: list[int], restore_at: int | None) -> pd.DataFrame:
    aggregator = BarAggregator(interval)
    out = []
    bounds = [0, *cuts, ticks.num_rows]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        if i == restore_at:
            aggregator = BarAggregator.restore(aggregator.save(), interval)
        out.append(aggregator.add(ticks.slice(a, b - a)))
        assert aggregator.late.num_rows == 0
    out.append(aggregator.flush())
    bars = pa.concat_tables(out)
    assert bars.schema == BAR_SCHEMA
    return bars.to_pandas().sort_values(["ts", "symbol"]).reset_index(drop=True)


@pytest.mark.parametrize(("interval", "rule"), [("1m", "1min"), ("15m", "15min"), ("1h", "1h")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregated_bars_equal_pandas_resample_in_any_micro_batches(
    interval: str, rule: str, seed: int
) -> None:
    ticks = _random_ticks(seed)
    expected = _resampled(ticks, interval, rule)
    rng = np.random.default_rng(seed)
    whole = _feed(ticks, interval, [], None)
    cuts = sorted(set(rng.integers(1, ticks.num_rows, 40).tolist()))
    split = _feed(ticks, interval, cuts, restore_at=len(cuts) // 2)
    singles = _feed(ticks.slice(0, 300), interval, list(range(1, 300)), restore_at=150)
    for got, want in (
        (whole, expected),
        (split, expected),
        (singles, _resampled(ticks.slice(0, 300), interval, rule)),
    ):
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_index_type=False)


def test_ticks_behind_the_open_bar_are_not_applied_and_come_back_as_late() -> None:
    aggregator = BarAggregator("1m")
    t = pd.Timestamp("2024-01-02 09:00", tz="UTC")

    def ticks(rows: list[tuple[str, str, float]]) -> pa.Table:
        return pa.table(
            {
                "symbol": [r[0] for r in rows],
                "ts": [t + pd.Timedelta(r[1]) for r in rows],
                "price": [r[2] for r in rows],
                "size": [1.0] * len(rows),
                "offset": range(len(rows)),
            },
        )

    assert (
        aggregator.add(ticks([("A", "0s", 10), ("A", "70s", 11), ("A", "30s", 99)])).num_rows == 1
    )
    assert aggregator.late.column("offset").to_pylist() == [2]
    assert aggregator.add(ticks([("A", "50s", 98), ("B", "0s", 5), ("A", "61s", 12)])).num_rows == 0
    assert aggregator.late.column("offset").to_pylist() == [0]
    assert aggregator.late_count == 2
    bars = aggregator.flush().to_pylist()
    assert [(b["symbol"], b["open"], b["high"], b["close"], b["volume"]) for b in bars] == [
        ("B", 5, 5, 5, 1),
        ("A", 11, 12, 12, 2),
    ]


@pytest.mark.parametrize("ticks_per_bar", [4, 7])
def test_synthesized_ticks_aggregate_back_to_their_bars(ticks_per_bar: int) -> None:
    bars = bars_table(generate_bars(SyntheticSpec(n_symbols=6, n_bars=300, interval="15m")))
    ticks = synthesize_ticks(bars, ticks_per_bar=ticks_per_bar, seed=3)
    assert ticks.num_rows == bars.num_rows * ticks_per_bar
    frame = ticks.to_pandas()
    assert frame.equals(frame.sort_values(["ts", "symbol"], kind="stable"))
    assert (frame["size"] > 0).all()
    aggregator = BarAggregator("15m")
    got = pa.concat_tables(
        [aggregator.add(ticks.slice(i, 997)) for i in range(0, ticks.num_rows, 997)]
        + [aggregator.flush()]
    )
    want = bars.cast(BAR_SCHEMA).to_pandas().sort_values(["ts", "symbol"]).reset_index(drop=True)
    got = got.to_pandas().sort_values(["ts", "symbol"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns="volume"), want.drop(columns="volume"))
    np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12)
    per_bar = frame.assign(bar=frame["ts"].dt.floor("15min")).groupby(["symbol", "bar"])["ts"]
    assert (per_bar.diff().dropna() > pd.Timedelta(0)).all()


def test_bars_without_volume_give_no_ticks() -> None:
    bars = bars_table(generate_bars(SyntheticSpec(n_symbols=2, n_bars=3, interval="1m")))
    volume = pa.array([0.0, 5.0, 0.0, 1.0, 2.0, 3.0])
    ticks = synthesize_ticks(bars.set_column(7, "volume", volume))
    assert ticks.num_rows == 4 * 4
