"""Feature engines, the features table, Redis materialization and the feature job, for real."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_apps.features.batch import compute_table
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.stores.online import OnlineStore, redis_client

from .conftest import BIN

SPEC = load_spec()
# Not AAPL/MSFT: test_ingest counts those in the same session stack.
PANEL_SYMBOLS = ["XOM", "JPM", "GE", "IBM", "KO", "PFE", "WMT", "CVX"]


@pytest.fixture(scope="module")
def panel_file(tmp_path_factory) -> tuple[str, pa.Table]:
    bars = validate_bars(load_sp500_panel()).accepted
    bars = bars[bars["symbol"].isin(PANEL_SYMBOLS)]
    table = pa.Table.from_pandas(bars, preserve_index=False)
    path = tmp_path_factory.mktemp("features") / "panel.parquet"
    pq.write_table(table, path)
    return str(path), compute_table(table, SPEC)


def read_sorted(path) -> pd.DataFrame:
    frame = pq.read_table(path).to_pandas()
    return frame.sort_values(["symbol", "ts"]).reset_index(drop=True)


def assert_same(frame: pd.DataFrame, expected: pa.Table) -> None:
    reference = expected.to_pandas().sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert frame["symbol"].tolist() == reference["symbol"].tolist()
    assert (frame["ts"].to_numpy() == reference["ts"].to_numpy()).all()
    for column in SPEC.columns:
        assert np.array_equal(
            frame[column].to_numpy(float), reference[column].to_numpy(float), equal_nan=True
        ), column


@pytest.mark.parametrize("engine", ["ray", "incremental", "spark"])
def test_every_engine_writes_the_batch_numbers(stack, panel_file, tmp_path, engine):
    path, expected = panel_file
    out = tmp_path / f"{engine}.parquet"
    stack.ok("features", "compute", "--engine", engine, "--input", path, "--output", str(out))
    assert_same(read_sorted(out), expected)


def test_relative_paths_are_the_users_working_folder_for_the_ray_data_tasks(
    stack, panel_file, tmp_path
):
    path, expected = panel_file
    (tmp_path / "bars.parquet").write_bytes(Path(path).read_bytes())
    done = stack.cli(
        "features",
        "compute",
        "--engine",
        "ray",
        "--input",
        "bars.parquet",
        "--output",
        "out.parquet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same(read_sorted(tmp_path / "out.parquet"), expected)


READ_STORE = """
import json, sys, ray
import pyarrow.parquet as pq
from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
from ray_apps.stores.offline_actor import offline_store
connect_ray(load_settings())
method = getattr(offline_store(load_settings()), sys.argv[2])
pq.write_table(ray.get(method.remote(**json.loads(sys.argv[3]))), sys.argv[1])
"""


def read_store(stack, tmp_path, method: str, **kwargs) -> pd.DataFrame:
    """An offline-store method's frame, read in a child (this process stays off Ray)."""
    path = tmp_path / f"{method}.parquet"
    done = stack.run(str(BIN / "python"), "-c", READ_STORE, str(path), method, json.dumps(kwargs))
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(path)


def test_store_roundtrip_is_idempotent_and_materializes_to_redis(stack, panel_file, tmp_path):
    stack.ok("ingest", "--source", "sp500-panel", "--symbols", *PANEL_SYMBOLS)
    first = stack.ok("features", "compute", "--from-store", "--symbols", *PANEL_SYMBOLS)
    stored = int(first.split("stored")[1].split()[0].replace(",", ""))
    assert stored == panel_file[1].num_rows
    stack.ok("features", "compute", "--from-store", "--symbols", *PANEL_SYMBOLS)
    rows = read_store(stack, tmp_path, "features", symbols=PANEL_SYMBOLS, spec_version=SPEC.version)
    assert len(rows) == panel_file[1].num_rows  # computed twice, stored once
    assert_same(rows.reset_index(drop=True), panel_file[1])

    summary = stack.ok("features", "materialize", "--symbols", *PANEL_SYMBOLS)
    assert f"materialized {len(PANEL_SYMBOLS)} of {len(PANEL_SYMBOLS)}" in summary
    vector = json.loads(stack.ok("features", "online", "XOM", "--json"))
    last = panel_file[1].to_pandas().query("symbol == 'XOM'").iloc[-1]
    assert vector["as_of"] == last["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert vector["spec_version"] == SPEC.version
    for column in SPEC.columns:
        assert vector[column] == pytest.approx(last[column], rel=1e-15, nan_ok=True), column
    again = stack.ok("features", "materialize", "--symbols", *PANEL_SYMBOLS)
    assert f"({len(PANEL_SYMBOLS)} kept: Redis already had newer)" in again


def test_online_writes_never_replace_newer_with_older(stack):
    online = OnlineStore(redis_client(stack.settings), prefix="test:features:", pipeline_size=2)
    times = pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-03"], utc=True)
    vectors = pa.table({"symbol": ["X", "X", "Y"], "ts": pa.array(times), "f": [2.0, 1.0, np.nan]})
    result = online.write(vectors, "7")
    assert (result.written, result.stale) == (2, 1)
    assert online.read("X") == {
        "as_of": "2024-01-02T00:00:00.000000Z",
        "spec_version": "7",
        "f": 2.0,
    }
    assert np.isnan(online.read("Y")["f"])
    older = pa.table({"symbol": ["Y"], "ts": pa.array(times[:1]), "f": [5.0]})
    assert online.write(older, "7").stale == 1
    assert online.read("Z") is None


def test_feature_job_via_ray_job_submit(stack, panel_file, tmp_path):
    job_env = stack.job_env()
    out = tmp_path / "job.parquet"
    done = stack.run(
        str(BIN / "ray"),
        "job",
        "submit",
        "--",
        "python",
        "-m",
        "ray_apps.jobs.features",
        "compute",
        "--input",
        panel_file[0],
        "--output",
        str(out),
        env=job_env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "features (ray):" in done.stdout
    assert_same(read_sorted(out), panel_file[1])


def test_bad_spec_and_bad_input_fail_in_one_line(stack, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text('version: "1"\nfeatures:\n  - {name: rsi, n: 0}\n')
    done = stack.cli("features", "compute", "--spec", str(spec), "--input", "x.parquet")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"ray-apps: {spec}: features[0] (rsi): n: Input should be greater than or equal to 2"
    ]
    csv = tmp_path / "bars.csv"
    csv.write_text("symbol,ts,close\nA,2024-01-01,1\n")
    done = stack.cli("features", "compute", "--input", str(csv))
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"ray-apps: {csv}: missing column(s) high, low, volume (found symbol, ts, close; "
    ), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    download = tmp_path / "SPY.csv"  # a price download: pointed at the ingest that reads it
    download.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,1,2,2,10\n")
    done = stack.cli("features", "compute", "--input", str(download))
    assert done.returncode == 2
    assert "`ray-apps ingest --source FILE [--symbol S]`" in done.stderr, done.stderr


@pytest.mark.parametrize("engine", ["ray", "incremental", "spark"])
def test_a_csv_with_a_nan_close_gives_the_values_of_the_series_without_that_bar(
    stack, panel_file, tmp_path, engine
):
    bars = pq.read_table(panel_file[0]).to_pandas()
    bad_row = int(np.flatnonzero(bars["symbol"] == "KO")[150])
    bars.loc[bad_row, "close"] = np.nan
    csv = tmp_path / "bars.csv"
    bars.to_csv(csv, index=False)
    out = tmp_path / f"{engine}.parquet"
    summary = stack.ok(
        "features", "compute", "--engine", engine, "--input", str(csv), "--output", str(out)
    )
    assert "rejected     1 bars (non_finite_price 1): not computed" in summary
    cleaned = pa.Table.from_pandas(bars.drop(index=bad_row), preserve_index=False)
    assert_same(read_sorted(out), compute_table(cleaned, SPEC))


def test_a_second_spec_leaves_the_first_specs_stored_values_alone(stack, tmp_path):
    symbols = ["KO", "PFE"]
    stack.ok("ingest", "--source", "sp500-panel", "--symbols", *symbols)
    stack.ok("features", "compute", "--from-store", "--symbols", *symbols)
    first = read_store(stack, tmp_path, "features", symbols=symbols, spec_version=SPEC.version)
    other = tmp_path / "two.yaml"
    other.write_text(
        'version: "two-features"\nfeatures:\n  - {name: rsi, n: 14}\n  - {name: sma, n: 20}\n'
    )
    summary = stack.ok(
        "features", "compute", "--from-store", "--symbols", *symbols, "--spec", str(other)
    )
    assert f"stored       {len(first):,} rows" in summary
    again = read_store(stack, tmp_path, "features", symbols=symbols, spec_version=SPEC.version)
    for column in SPEC.columns:
        assert np.array_equal(
            first[column].to_numpy(float), again[column].to_numpy(float), equal_nan=True
        ), column
    two = load_spec(other)
    coverage = read_store(
        stack,
        tmp_path,
        "feature_coverage",
        spec_version=two.version,
        fingerprint=two.fingerprint,
        interval="1d",
        symbols=symbols,
    )
    assert coverage["rows"].tolist() == first.groupby("symbol").size().loc[symbols].tolist()
    assert coverage["last_ts"].tolist() == first.groupby("symbol")["ts"].max().tolist()


def test_to_store_from_a_15m_file_stores_15m_rows(stack, tmp_path):
    bars = generate_bars(SyntheticSpec(n_symbols=2, n_bars=200, interval="15m", seed=7))
    bars = bars.drop(columns="interval").assign(symbol=lambda f: "Q" + f["symbol"])
    path = tmp_path / "bars15.parquet"
    bars.to_parquet(path, index=False)
    summary = stack.ok("features", "compute", "--input", str(path), "--to-store")
    assert "(15m bars, spec" in summary
    symbols = sorted(bars["symbol"].unique())
    covered = {
        interval: read_store(
            stack,
            tmp_path,
            "feature_coverage",
            spec_version=SPEC.version,
            fingerprint=SPEC.fingerprint,
            interval=interval,
            symbols=symbols,
        )
        for interval in ("15m", "1d")
    }
    assert covered["15m"]["rows"].tolist() == [200, 200]
    assert covered["1d"].empty


def test_invalid_option_and_materialize_before_compute_are_one_line(stack, tmp_path):
    done = stack.cli("features", "compute", "--from-store", "--parallelism", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ray-apps: --parallelism: Input should be greater than or equal to 1"
    ]
    spec = tmp_path / "never.yaml"
    spec.write_text('version: "never-computed"\nfeatures:\n  - {name: rsi, n: 9}\n')
    done = stack.cli("features", "materialize", "--spec", str(spec))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ray-apps:")]
    assert errors == [
        "ray-apps: no 1d features of spec version never-computed stored; run "
        "`ray-apps features compute --from-store` first"
    ]
    assert done.stderr.strip().splitlines()[-1] == errors[0]
