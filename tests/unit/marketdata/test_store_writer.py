"""StoreWriter against a real local Ray actor whose process dies (Ray restarts it)."""

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import ray

from ray_apps.errors import UserError
from ray_apps.marketdata.store_writer import StoreWriter


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0, max_restarts=-1)
class DyingStore:
    """Records inserts in a file (its memory dies with it); calls numbered in ``deaths`` kill
    the process, as does every call past ``dies_from``."""

    def __init__(self, folder: str, deaths: tuple[int, ...], dies_from: int) -> None:
        self.folder = Path(folder)
        self.deaths = deaths
        self.dies_from = dies_from

    def _count(self) -> int:
        calls = self.folder / "calls"
        n = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(n))
        if n in self.deaths or n >= self.dies_from:
            os._exit(1)
        return n

    def insert_bars(self, bars: pa.Table, bulk_load: str | None = None) -> int:
        self._count()
        with open(self.folder / "bars", "a") as out:
            out.write(f"{bars.num_rows}\n")
        return bars.num_rows

    def insert_quarantine(self, rows: pd.DataFrame, ingest_id: str, source: str) -> int:
        self._count()
        return len(rows)


def blocks(n: int) -> list[tuple[pa.Table, pd.DataFrame, int]]:
    return [
        (pa.table({"x": list(range(10 * (i + 1)))}), pd.DataFrame(), 10 * (i + 1)) for i in range(n)
    ]


def write(store, data, stored: list[int], attempts: int) -> None:
    writer = StoreWriter(
        store,
        "ing",
        "src",
        stored.append,
        lambda: sum(stored),
        max_in_flight=1,
        first_backoff_s=0.1,
        attempts=attempts,
    )
    for bars, rows, counts in data:
        writer.submit(bars, rows, counts)
    writer.finish()


def test_a_block_is_stored_again_once_the_actor_is_back(local_ray, tmp_path):
    store = DyingStore.remote(str(tmp_path), deaths=(3, 4), dies_from=10**6)
    stored: list[int] = []
    write(store, blocks(3), stored, attempts=10)  # up to ~30 s for the restarts
    assert stored == [10, 20, 30]
    assert (tmp_path / "bars").read_text().split() == ["10", "20", "30"]


def test_when_retries_run_out_one_line_says_what_was_stored(local_ray, tmp_path):
    store = DyingStore.remote(str(tmp_path), deaths=(), dies_from=3)
    stored: list[int] = []
    with pytest.raises(UserError) as err:
        write(store, blocks(3), stored, attempts=2)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the offline store failed 2 times in a row while storing src (")
    assert message.endswith(
        "10 rows were stored so far: run the same command again (a re-ingest stores each bar once)"
    )
