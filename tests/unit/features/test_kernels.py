"""The fused kernel of a spec against the kernels of its features one by one, and batch grouping.

A spec's kernel shares work between features (one variance window for Bollinger bands and the
z-score of close, one 1-bar log return for logret_1 and vol) and keeps running values in
registers; each feature's values and its slice of the state vector (the checkpoint format)
must still be exactly those of a spec holding that feature alone.
"""

import re

import numpy as np
import pyarrow as pa
import pytest

from ray_apps.errors import UserError
from ray_apps.features import kernels
from ray_apps.features.batch import compute_table
from ray_apps.features.spec import FeatureSpec, load_spec, parse_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.validation import validate_bars

DEFAULT = load_spec()
# the shared values in the other order: the z-score leads the window, vol computes the log return
REORDERED = parse_spec(
    {
        "version": "1",
        "features": [
            {"name": "vol", "n": 20},
            {"name": "zclose", "n": 20},
            {"name": "zvolume", "n": 20},
            {"name": "bb", "n": 20, "k": 2},
            {"name": "logret", "k": 5},
            {"name": "logret", "k": 1},
            {"name": "bb", "n": 10, "k": 1.5},
            {"name": "zclose", "n": 10},
        ],
    }
)


@pytest.fixture(scope="module")
def panel() -> pa.Table:
    bars = validate_bars(load_sp500_panel()).accepted
    return pa.Table.from_pandas(bars, preserve_index=False).sort_by(
        [("ts", "ascending"), ("symbol", "ascending")]
    )


def run_rows(spec: FeatureSpec, bars: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The states and values after feeding ``bars`` (time-major) through ``run_rows``."""
    symbols = bars.column("symbol").to_pylist()
    index = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    rows = np.array([index[s] for s in symbols], dtype=np.int64)
    plan = spec.plan
    states = np.zeros((len(index), plan.state_size))
    values = np.empty((len(rows), len(plan.columns)))
    arrays = [bars.column(c).to_numpy().astype(float) for c in ("high", "low", "close", "volume")]
    kernels.run_rows(plan.plan, plan.params, states, rows, *arrays, values)
    return states, values


@pytest.mark.parametrize("spec", [DEFAULT, REORDERED], ids=["default", "reordered"])
def test_each_feature_and_its_state_equal_the_feature_alone(panel, spec):
    bars = panel.slice(0, 524 * 120)  # 120 bar times, mid-series for the long windows
    states, values = run_rows(spec, bars)
    column = 0
    for i, entry in enumerate(spec.features):
        alone = FeatureSpec(version="1", features=(entry,))
        alone_states, alone_values = run_rows(alone, bars)
        start = int(spec.plan.plan[i, 1])
        size = alone.plan.state_size
        assert np.array_equal(states[:, start : start + size], alone_states), entry.name
        width = len(entry.columns)
        mine = values[:, column : column + width]
        assert np.array_equal(mine, alone_values, equal_nan=True), entry.name
        assert not np.isnan(mine[-524:]).all(), entry.name  # compared defined values too
        column += width


def test_batch_equals_incremental_bit_for_bit_with_shared_values(panel):
    _, values = run_rows(REORDERED, panel)
    batch = compute_table(panel, REORDERED)
    keyed = panel.select(["symbol", "ts"]).append_column("row", pa.array(np.arange(len(panel))))
    order = keyed.sort_by([("symbol", "ascending"), ("ts", "ascending")]).column("row")
    batch_rows = batch.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    for i, column in enumerate(REORDERED.columns):
        expected = values[order.to_numpy(), i]
        assert np.array_equal(batch_rows.column(column).to_numpy(), expected, equal_nan=True)


def test_bars_in_any_order_give_each_symbols_own_series(panel):
    three = panel.filter(pa.compute.is_in(panel.column("symbol"), pa.array(["AAPL", "GE", "XOM"])))
    ordered = three.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    expected = compute_table(ordered, DEFAULT)
    # AAPL's bars in two runs with GE between, each run in time order
    count = pa.compute.sum(pa.compute.equal(ordered.column("symbol"), "AAPL")).as_py()
    aapl, rest = ordered.slice(0, count), ordered.slice(count)
    split = pa.concat_tables([aapl.slice(0, 100), rest, aapl.slice(100)])
    shuffled = ordered.take(np.random.default_rng(7).permutation(len(ordered)))
    for bars in (split, shuffled, three):
        got = compute_table(bars, DEFAULT).sort_by([("symbol", "ascending"), ("ts", "ascending")])
        assert got.select(["symbol", "ts"]).equals(expected.select(["symbol", "ts"]))
        for column in DEFAULT.columns:
            a, b = got.column(column).to_numpy(), expected.column(column).to_numpy()
            assert np.array_equal(a, b, equal_nan=True), column


@pytest.mark.parametrize("in_order", [False, True])
def test_a_repeated_symbol_and_time_is_refused(panel, in_order):
    one = panel.filter(pa.compute.equal(panel.column("symbol"), "AAPL")).slice(0, 10)
    # the repeat at the end (the bars get sorted first) or right after its twin (they do not)
    parts = [one.slice(0, 5), one.slice(4)] if in_order else [one, one.slice(4, 1)]
    twin = f"(AAPL, {one.column('ts')[4].as_py()}) (1 repeated row(s))"
    with pytest.raises(UserError, match=re.escape(f"bars repeat (symbol, ts) = {twin}")):
        compute_table(pa.concat_tables(parts), DEFAULT)


def test_a_missing_time_is_refused_naming_the_column(panel):
    one = panel.filter(pa.compute.equal(panel.column("symbol"), "AAPL")).slice(0, 10)
    ts = one.column("ts").to_pylist()
    ts[3] = None
    bars = one.set_column(
        one.schema.get_field_index("ts"), "ts", pa.array(ts, one.schema.field("ts").type)
    )
    with pytest.raises(UserError, match=r"^bars: ts is missing in 1 row\(s\)$"):
        compute_table(bars, DEFAULT)


def test_the_generated_kernel_is_compiled_once_per_plan():
    plan = REORDERED.plan
    first = kernels.fused_kernel(plan.plan, plan.params, plan.state_size)
    again = FeatureSpec(version="2", features=REORDERED.features).plan
    assert kernels.fused_kernel(again.plan, again.params, again.state_size) is first
