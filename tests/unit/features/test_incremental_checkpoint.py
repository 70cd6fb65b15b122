"""The incremental engine's checkpoints and its compiled micro-batch path.

Checkpoints: the raw-array format round-trips exactly, a first-format (npz) checkpoint written
by the code before it still restores and continues bit-identical to the batch engine, and bytes
that are no checkpoint are refused in one line. The micro-batch path: the compiled bar rules
give the codes of ``bar_verdicts`` (the ingest's rules) on every rule, blank symbols and
in-batch duplicates are refused or skipped and counted, without touching state.
"""

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ray_apps.errors import UserError
from ray_apps.features.bar_checks import bar_verdicts, compiled_verdicts
from ray_apps.features.batch import compute_table
from ray_apps.features.engines.incremental import IncrementalEngine, replay
from ray_apps.features.spec import load_spec, parse_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.validation import validate_bars

SPEC = load_spec()
KEYS = [("symbol", "ascending"), ("ts", "ascending")]
#: Written by the engine of commit cc3ebbd (``np.savez``) for FIXTURE_SPEC after the panel's
#: bars of A, AA and AAPL before FIXTURE_CUT, then two replayed bars and one refused bar.
FIXTURE = Path(__file__).with_name("incremental_state_v1.npz")
FIXTURE_SPEC = parse_spec(
    {
        "version": "1",
        "features": [{"name": "rsi", "n": 7}, {"name": "sma", "n": 5}, {"name": "atr", "n": 5}],
    }
)
FIXTURE_SYMBOLS = ["A", "AA", "AAPL"]
FIXTURE_CUT = 1255996800000000  # microseconds: the fixture's 41st bar time


@pytest.fixture(scope="module")
def panel() -> pa.Table:
    bars = validate_bars(load_sp500_panel()).accepted
    return pa.Table.from_pandas(bars, preserve_index=False)


def assert_identical(left: pa.Table, right: pa.Table, spec=SPEC) -> None:
    assert left.column("symbol").to_pylist() == right.column("symbol").to_pylist()
    assert left.column("ts").equals(right.column("ts"))
    for column in spec.columns:
        a, b = left.column(column).to_numpy(), right.column(column).to_numpy()
        assert np.array_equal(a, b, equal_nan=True), column


def test_checkpoint_round_trip_is_exact(panel):
    engine = IncrementalEngine(SPEC)
    list(replay(engine, panel.slice(0, 3000)))
    engine.update(panel.slice(0, 5))  # replays: skipped
    data = engine.save()
    restored = IncrementalEngine.restore(data, SPEC)
    assert restored.save() == data
    assert restored.symbols == engine.symbols
    assert restored.skipped == engine.skipped == 5
    symbols = engine.symbols
    assert_identical(restored.latest(symbols), engine.latest(symbols))
    assert np.array_equal(restored.last_times(symbols), engine.last_times(symbols))


def test_checkpoint_after_a_new_symbol_holds_it(panel):
    engine = IncrementalEngine(SPEC)
    first = panel.filter(pc.equal(panel.column("symbol"), "AAPL")).slice(0, 30)
    engine.update(first)
    engine.save()  # encodes the symbols once
    other = panel.filter(pc.equal(panel.column("symbol"), "MSFT")).slice(0, 30)
    engine.update(other)
    restored = IncrementalEngine.restore(engine.save(), SPEC)
    assert restored.symbols == ["AAPL", "MSFT"]
    assert_identical(restored.latest(["MSFT"]), engine.latest(["MSFT"]))


def test_first_format_checkpoint_restores_and_continues_like_the_batch_engine(panel):
    bars = panel.filter(pc.is_in(panel.column("symbol"), pa.array(FIXTURE_SYMBOLS)))
    engine = IncrementalEngine.restore(FIXTURE.read_bytes(), FIXTURE_SPEC)
    assert engine.symbols == FIXTURE_SYMBOLS
    assert engine.skipped == 2
    assert engine.rejected == {"high_below_open_close": 1}
    later = bars.filter(pc.greater_equal(bars.column("ts").cast(pa.int64()), FIXTURE_CUT))
    out = pa.concat_tables(replay(engine, later)).sort_by(KEYS)
    expected = compute_table(bars, FIXTURE_SPEC).sort_by(KEYS)
    micros = expected.column("ts").cast(pa.int64())
    expected = expected.filter(pc.greater_equal(micros, FIXTURE_CUT))
    assert out.num_rows == later.num_rows > 0
    assert_identical(out, expected, FIXTURE_SPEC)
    resaved = IncrementalEngine.restore(engine.save(), FIXTURE_SPEC)  # now in the new format
    assert resaved.rejected == engine.rejected and resaved.skipped == engine.skipped


def test_first_format_checkpoint_of_another_spec_is_refused():
    with pytest.raises(UserError, match="saved feature state is for spec"):
        IncrementalEngine.restore(FIXTURE.read_bytes(), SPEC)


def test_bytes_that_are_no_checkpoint_are_refused_in_one_line(panel):
    with pytest.raises(UserError, match="not an incremental engine checkpoint"):
        IncrementalEngine.restore(b"not a checkpoint", SPEC)
    engine = IncrementalEngine(SPEC)
    engine.update(panel.slice(0, 50))
    for damaged in (engine.save()[:-8], FIXTURE.read_bytes()[:100]):
        with pytest.raises(UserError, match="a damaged checkpoint"):
            IncrementalEngine.restore(damaged, SPEC)


def compiled(*prices: np.ndarray) -> np.ndarray:
    codes = np.zeros(prices[0].shape[0], dtype=np.int8)
    compiled_verdicts(*prices, codes)
    return codes


def test_compiled_verdicts_equal_bar_verdicts_on_every_combination():
    specials = [10.0, 12.0, 8.0, 0.0, -1.0, np.nan, np.inf, -np.inf]
    grid = np.array(list(itertools.product(specials, repeat=5)))  # open, high, low, close, vol
    o, h, low, c, v = (np.ascontiguousarray(grid[:, i]) for i in range(5))
    expected = bar_verdicts(h, low, c, v, open_=o)
    assert np.array_equal(compiled(h, low, c, v, o), expected)
    without_open = bar_verdicts(h, low, c, v)
    assert np.array_equal(compiled(h, low, c, v, c), without_open)
    assert len(np.unique(expected)) == 7  # good and all six value rules occur


def test_blank_symbols_are_refused_and_counted_without_a_state_row():
    engine = IncrementalEngine(SPEC)
    prices = [np.array([10.0, 10.0, 10.0]) for _ in range(4)]
    accepted, values = engine.update_arrays(["", "X", None], np.array([1, 1, 1]), *prices)
    assert accepted.tolist() == [False, True, False]
    assert values.shape == (1, len(SPEC.columns))
    assert engine.rejected == {"missing_symbol": 2}
    assert engine.symbols == ["X"]


def test_duplicates_within_a_batch_are_skipped_in_batch_order(panel):
    aapl = panel.filter(pc.equal(panel.column("symbol"), "AAPL")).slice(0, 3)
    parts = [aapl.slice(0, 2), aapl.slice(1, 1), aapl.slice(0, 1), aapl.slice(2, 1)]
    batch = pa.concat_tables(parts)
    engine = IncrementalEngine(SPEC)
    out = engine.update(batch)
    assert engine.skipped == 2
    assert out.column("ts").to_pylist() == aapl.column("ts").to_pylist()
    expected = compute_table(aapl, SPEC).sort_by(KEYS)
    assert_identical(out, expected)
