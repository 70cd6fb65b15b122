"""The Ray Data engine on a local one-CPU Ray: features returned, written by the tasks, timed."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from ray_apps.features.batch import compute_table
from ray_apps.features.compute import ComputeRequest, compute_features
from ray_apps.features.engines import ray_data
from ray_apps.features.engines.ray_data import (
    STEPS,
    FeatureSink,
    TaskTally,
    feature_dataset,
    write_features,
)
from ray_apps.features.sources import BarsInput
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def bars_path(tmp_path, monkeypatch):
    # small limits so 6 symbols make 3 tasks of 2 blocks each
    monkeypatch.setattr(ray_data, "MIN_ROWS_PER_TASK", 100)
    monkeypatch.setattr(ray_data, "MAX_ROWS_PER_BLOCK", 600)
    bars = generate_bars(SyntheticSpec(n_symbols=6, n_bars=500, interval="15m"))
    bars.loc[7, "close"] = np.nan  # one bad bar: left out and counted
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path, index=False)
    return path


def expected_features(path) -> pa.Table:
    bars = pq.read_table(path).to_pandas().dropna(subset=["close"])
    return compute_table(pa.Table.from_pandas(bars, preserve_index=False), SPEC)


def assert_same(got: pa.Table, expected: pa.Table) -> None:
    got = got.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    assert got.num_rows == expected.num_rows
    assert got.column("symbol").equals(expected.column("symbol"))
    assert got.column("ts").equals(expected.column("ts"))
    for column in SPEC.columns:
        assert np.array_equal(
            got.column(column).to_numpy(), expected.column(column).to_numpy(), equal_nan=True
        ), column


def test_the_dataset_holds_the_kernels_numbers_and_the_tally_the_bad_bars(local_ray, bars_path):
    tally = TaskTally.remote()
    dataset = feature_dataset(BarsInput(path=bars_path), SPEC, parallelism=3, tally=tally)
    got = pa.concat_tables(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert_same(got, expected_features(bars_path))
    assert ray.get(tally.counts.remote()) == {"non_finite_price": 1}
    seconds = ray.get(tally.seconds.remote())
    assert sorted(seconds) == sorted(STEPS)
    assert seconds["read"] > 0 and seconds["compute"] > 0


def test_tasks_write_their_own_parquet_parts_and_time_the_writes(local_ray, bars_path, tmp_path):
    folder = tmp_path / "features"
    folder.mkdir()
    tally = TaskTally.remote()
    rows, stored = write_features(
        BarsInput(path=bars_path), SPEC, FeatureSink(folder=folder), parallelism=3, tally=tally
    )
    parts = sorted(p.name for p in folder.iterdir())
    assert parts == [f"part-{t:05d}-{b:03d}.parquet" for t in range(3) for b in range(2)]
    expected = expected_features(bars_path)
    assert (rows, stored) == (expected.num_rows, 0)
    assert_same(pq.read_table(folder), expected)
    assert ray.get(tally.seconds.remote())["write"] > 0


@ray.remote(num_cpus=0)
class FakeFeatureStore:
    """The one offline-store method a ``to_store`` run of file input calls, recording."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.keys: set[tuple] = set()

    def insert_features(self, features, interval, spec_version, fingerprint) -> int:
        self.tables.append(features)
        self.keys.add((interval, spec_version, fingerprint))
        return features.num_rows

    def received(self) -> tuple[pa.Table, set[tuple]]:
        return pa.concat_tables(self.tables), self.keys


def test_read_tasks_store_their_own_features(local_ray, bars_path):
    store = FakeFeatureStore.remote()
    rows, stored = write_features(
        BarsInput(path=bars_path), SPEC, FeatureSink(store=store, interval="15m"), parallelism=3
    )
    expected = expected_features(bars_path)
    assert rows == stored == expected.num_rows
    table, keys = ray.get(store.received.remote())
    assert_same(table, expected)
    assert keys == {("15m", SPEC.version, SPEC.fingerprint)}


def test_compute_features_to_store_counts_what_the_tasks_stored(local_ray, bars_path):
    store = FakeFeatureStore.remote()
    request = ComputeRequest(engine="ray", source=BarsInput(path=bars_path), to_store=True)
    summary = compute_features(request, SPEC, store, echo=lambda line: None)
    expected = expected_features(bars_path)
    assert (summary.rows, summary.stored) == (expected.num_rows, expected.num_rows)
    assert summary.rejected == {"non_finite_price": 1}
    assert_same(ray.get(store.received.remote())[0], expected)
