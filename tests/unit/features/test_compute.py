"""The compute pipeline without a cluster: the engine table, file intervals, CSV input, options."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_apps.errors import UserError
from ray_apps.features import compute
from ray_apps.features.batch import compute_table
from ray_apps.features.compute import ComputeRequest, compute_features
from ray_apps.features.sources import BarsInput
from ray_apps.features.spec import load_spec
from ray_apps.jobs import features as job
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def bars_file(tmp_path, spacing="15m", name="bars.csv", n_bars=300, **columns) -> str:
    bars = generate_bars(SyntheticSpec(n_symbols=2, n_bars=n_bars, interval=spacing))
    bars = bars.drop(columns="interval").assign(**columns)
    path = tmp_path / name
    if name.endswith(".csv"):
        bars.to_csv(path, index=False)
    else:
        bars.to_parquet(path, index=False)
    return str(path)


def run(path, engine="incremental", interval=None, output=None):
    request = ComputeRequest(
        engine=engine, source=BarsInput(path=path, interval=interval), output=output
    )
    return compute_features(request, SPEC, None, echo=lambda line: None)


def test_engines_are_looked_up_in_the_table(tmp_path, monkeypatch):
    calls = []

    def fake(run):
        calls.append(sorted(run.counts))
        run.rejected["non_finite_price"] += 2
        yield compute_table(
            pa.table(
                {
                    "symbol": ["A"],
                    "ts": pa.array([0], pa.timestamp("us", tz="UTC")),
                    "high": [2.0],
                    "low": [1.0],
                    "close": [1.5],
                    "volume": [1.0],
                }
            ),
            SPEC,
        )

    monkeypatch.setitem(compute.ENGINES, "spark", fake)
    summary = run(bars_file(tmp_path), engine="spark")
    assert calls == [["SYN0000", "SYN0001"]]
    assert (summary.rows, summary.rejected) == (1, {"non_finite_price": 2})
    assert sorted(compute.ENGINES) == ["incremental", "ray", "spark"]


def test_incremental_engine_reads_a_csv_and_reports_its_bad_bars(tmp_path):
    path = bars_file(tmp_path)
    frame = pd.read_csv(path)
    frame.loc[10, "close"] = np.nan
    frame.to_csv(path, index=False)
    out = tmp_path / "features.parquet"
    summary = run(path, output=out)
    assert summary.rejected == {"non_finite_price": 1}
    assert summary.interval == "15m"
    assert "rejected     1 bars (non_finite_price 1): not computed" in summary.render()
    written = pq.read_table(out).sort_by([("symbol", "ascending"), ("ts", "ascending")])
    clean = frame.drop(index=10).assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True))
    expected = compute_table(pa.Table.from_pandas(clean, preserve_index=False), SPEC)
    assert written.column("ts").equals(expected.column("ts"))
    for column in SPEC.columns:
        assert np.array_equal(
            written.column(column).to_numpy(), expected.column(column).to_numpy(), equal_nan=True
        ), column


@pytest.mark.parametrize("name", ["bars.csv", "bars.parquet"])
def test_a_file_interval_comes_from_its_column_or_its_timestamps(tmp_path, name):
    assert run(bars_file(tmp_path, "15m", name, n_bars=30)).interval == "15m"
    assert run(bars_file(tmp_path, "1h", name, n_bars=30)).interval == "1h"
    assert run(bars_file(tmp_path, "1d", name, n_bars=30, interval="1d")).interval == "1d"
    assert run(bars_file(tmp_path, "1h", name, n_bars=30), interval="4h").interval == "4h"


def test_a_file_of_several_intervals_or_another_interval_is_refused(tmp_path):
    path = bars_file(tmp_path, "15m", "mixed.parquet", n_bars=30)
    frame = pd.read_parquet(path)
    frame["interval"] = np.where(frame["symbol"] == "SYN0000", "15m", "1h")
    frame.to_parquet(path, index=False)
    with pytest.raises(UserError, match=r"holds bars of several intervals \['15m', '1h'\]"):
        run(path)
    frame["interval"] = "15m"
    frame.to_parquet(path, index=False)
    with pytest.raises(UserError, match=r"--interval 1h: .* holds \['15m'\] bars"):
        run(path, interval="1h")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--parallelism", "0"], "--parallelism: Input should be greater than or equal to 1"),
        (["--spark-executors", "0"], "--spark-executors: Input should be greater than or equal"),
        (["--interval", "5x"], "--interval: Value error, '5x' is not a count and a unit"),
        (["--spark-executor-memory", "lots"], "--spark-executor-memory: String should match"),
    ],
)
def test_an_invalid_option_is_one_line_naming_it(option, message, capsys):
    code = job.main(["compute", "--input", "bars.csv", *option])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"ray-apps: {message}")
