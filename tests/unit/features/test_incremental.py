"""The incremental engine equals the batch engine at every bar, across save and restore."""

import itertools

import numpy as np
import pyarrow as pa
import pytest

from ray_apps.errors import UserError
from ray_apps.features.batch import compute_table
from ray_apps.features.engines.incremental import IncrementalEngine
from ray_apps.features.spec import load_spec, parse_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars

SPEC = load_spec()
KEYS = [("symbol", "ascending"), ("ts", "ascending")]


def replay(bars: pa.Table, restore_at: int | None = None) -> pa.Table:
    """Feeds the bars time-major, one micro-batch per bar time, as the stream consumer will."""
    bars = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    times = bars.column("ts").cast(pa.int64()).to_numpy()
    edges = [0, *(np.flatnonzero(np.diff(times)) + 1).tolist(), bars.num_rows]
    engine, out = IncrementalEngine(SPEC), []
    for step, (first, last) in enumerate(itertools.pairwise(edges)):
        if step == restore_at:
            engine = IncrementalEngine.restore(engine.save(), SPEC)
        out.append(engine.update(bars.slice(first, last - first)))
    return pa.concat_tables(out).sort_by(KEYS)


def assert_identical(left: pa.Table, right: pa.Table) -> None:
    assert left.column("symbol").to_pylist() == right.column("symbol").to_pylist()
    assert left.column("ts").equals(right.column("ts"))
    for column in SPEC.columns:
        a, b = left.column(column).to_numpy(), right.column(column).to_numpy()
        assert np.array_equal(a, b, equal_nan=True), column


@pytest.fixture(scope="module")
def panel() -> pa.Table:
    bars = validate_bars(load_sp500_panel()).accepted
    return pa.Table.from_pandas(bars, preserve_index=False)


def test_equals_batch_at_every_bar_on_the_panel(panel):
    assert_identical(replay(panel), compute_table(panel, SPEC).sort_by(KEYS))


def test_equals_batch_across_save_and_restore_mid_series(panel):
    assert_identical(replay(panel, restore_at=120), compute_table(panel, SPEC).sort_by(KEYS))


def test_equals_batch_on_long_synthetic_series():
    bars = generate_bars(SyntheticSpec(n_symbols=20, n_bars=1500, interval="15m"))
    table = pa.Table.from_pandas(bars, preserve_index=False)
    assert_identical(replay(table, restore_at=700), compute_table(table, SPEC).sort_by(KEYS))


def test_replayed_and_out_of_order_bars_are_skipped_and_counted(panel):
    aapl = panel.filter(pa.compute.equal(panel.column("symbol"), "AAPL")).slice(0, 50)
    engine = IncrementalEngine(SPEC)
    first = engine.update(aapl.slice(0, 40))
    again = engine.update(aapl.slice(30, 20))  # 10 replayed bars, 10 new ones
    assert first.num_rows == 40 and again.num_rows == 10
    assert engine.skipped == 10
    latest = engine.latest(["AAPL"])
    assert latest.column("ts")[0] == aapl.column("ts")[49]


def test_restore_refuses_state_of_another_spec(panel):
    engine = IncrementalEngine(SPEC)
    engine.update(panel.slice(0, 10))
    other = parse_spec({"version": "1", "features": [{"name": "rsi", "n": 7}]})
    with pytest.raises(UserError, match="saved feature state is for spec"):
        IncrementalEngine.restore(engine.save(), other)
