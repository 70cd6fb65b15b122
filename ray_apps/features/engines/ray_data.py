"""The Ray Data engine: whole symbols per read task, the compiled kernels inside it, no shuffle.

A custom datasource hands out read tasks that each load a group of whole symbols (from the
offline store through its actor, or from a file with a pushed-down symbol filter) and run
:func:`compute_checked` on them before yielding, so no ``groupby`` shuffle is needed. Computing
inside the read keeps every symbol's history in one piece even where Ray Data splits or
coalesces blocks downstream. The result is an ordinary lazy Dataset: write it, map it further
or feed it to training. With a :class:`FeatureSink` the tasks write their features themselves
(Parquet part files, the store's features table) and hand Ray Data a one-row summary per
block instead, so the feature bytes never pass through the object store or the driver.

Bars that break the bar rules are left out before the kernels run. Each task reports them,
per reason, and the seconds it spent reading, computing and writing, to a :class:`TaskTally`
actor.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ray_apps.features.batch import compute_checked
from ray_apps.features.outputs import write_features_parquet
from ray_apps.features.sources import BarsInput, partition, read_group, symbol_counts
from ray_apps.features.spec import FeatureSpec
from ray_apps.stores.offline_actor import OfflineStoreHandle

MAX_ROWS_PER_BLOCK = 250_000
"""Blocks stay well under Ray Data's 128 MiB target with about 25 float columns."""
MIN_ROWS_PER_TASK = 100_000
"""Fewer, larger read tasks: a task costs milliseconds, a bar about 0.2 microseconds."""
MAX_ROWS_PER_TASK = 2_000_000
"""Bounds a task's memory: about 400 MB of bars and features."""
STEPS = ("read", "compute", "write")
"""The steps a read task times: load its bars, run the kernels, write (with a sink)."""
SINK_SCHEMA = pa.schema([pa.field("rows", pa.int64()), pa.field("stored", pa.int64())])
"""The one-row blocks a sink's tasks yield: feature rows written, rows stored."""


@ray.remote(num_cpus=0)
class TaskTally:
    """What the read tasks report, summed: bars left out per reason, seconds per step."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._seconds: Counter[str] = Counter()

    def add(self, counts: dict[str, int], seconds: dict[str, float] | None = None) -> None:
        """Adds one block's counts and step seconds."""
        self._counts.update(counts)
        self._seconds.update(seconds or {})

    def counts(self) -> dict[str, int]:
        """Bars left out so far, per reason."""
        return dict(self._counts)

    def seconds(self) -> dict[str, float]:
        """Seconds the tasks spent so far in each of :data:`STEPS`, summed over tasks."""
        return {step: float(self._seconds[step]) for step in STEPS}


@dataclass(frozen=True)
class FeatureSink:
    """Where read tasks write their features themselves instead of returning them.

    Attributes:
        folder: a folder for Parquet part files, one per block (``part-TTTTT-BBB.parquet``);
            it must exist.
        store: the offline-store actor, to upsert the features into its features table.
        interval: the bars' interval the stored rows are keyed by (with ``store``).
    """

    folder: Path | None = None
    store: OfflineStoreHandle | None = None
    interval: str | None = None

    def write(self, features: pa.Table, spec: FeatureSpec, name: str) -> int:
        """Writes one block; returns the rows stored (0 without a store)."""
        if self.folder is not None:
            write_features_parquet(features, Path(self.folder) / f"part-{name}.parquet")
        if self.store is None:
            return 0
        call = self.store.insert_features.remote(
            features, self.interval, spec.version, spec.fingerprint
        )
        return int(ray.get(call))


class FeatureDatasource(Datasource):
    """Features of bars read in groups of whole symbols.

    Args:
        source: where the bars are.
        spec: the features to compute.
        store: the offline-store actor (store input only).
        counts: rows per symbol when the caller already has them (saves a query).
        tally: a :class:`TaskTally` that counts the bars left out and the step seconds
            (uncounted when None).
        sink: when given, tasks write their features there and yield :data:`SINK_SCHEMA`
            rows instead.
    """

    def __init__(
        self,
        source: BarsInput,
        spec: FeatureSpec,
        store: OfflineStoreHandle | None = None,
        counts: dict[str, int] | None = None,
        tally: ray.actor.ActorHandle | None = None,
        sink: FeatureSink | None = None,
    ) -> None:
        self.source = source
        self.spec = spec
        self.store = store
        self.counts = counts if counts is not None else symbol_counts(source, store)
        self.tally = tally
        self.sink = sink

    def groups(self, parallelism: int) -> list[list[str]]:
        """The symbol groups of at most ``parallelism`` read tasks (fewer for small inputs)."""
        total = sum(self.counts.values())
        parts = max(1, min(parallelism, total // MIN_ROWS_PER_TASK))
        # big inputs: a whole number of rounds of ``parallelism`` tasks, so no CPU idles at the end
        rounds = -(-total // (parts * MAX_ROWS_PER_TASK))
        return partition(self.counts, parts * rounds, MAX_ROWS_PER_TASK)

    def estimate_inmemory_data_size(self) -> int:
        """The feature table's size: keys plus 8 bytes a feature, per bar."""
        if self.sink is not None:
            return 16 * len(self.groups(1))
        return (16 + 8 * len(self.spec.columns)) * sum(self.counts.values())

    def get_read_tasks(self, parallelism: int, **_: object) -> list[ReadTask]:
        """One read task per group of whole symbols; each yields feature blocks."""
        tasks = []
        for index, group in enumerate(self.groups(parallelism)):
            rows = sum(self.counts[s] for s in group)
            blocks = partition({s: self.counts[s] for s in group}, 1, MAX_ROWS_PER_BLOCK)

            def read(blocks: list[list[str]] = blocks, index: int = index) -> Iterable[pa.Table]:
                return self._read(blocks, index)

            size = 16 if self.sink is not None else (16 + 8 * len(self.spec.columns)) * rows
            metadata = BlockMetadata(
                num_rows=len(blocks) if self.sink is not None else rows,
                size_bytes=size,
                exec_stats=None,
                input_files=None,
            )
            tasks.append(ReadTask(read, metadata))
        return tasks

    def _read(self, blocks: list[list[str]], task: int) -> Iterable[pa.Table]:
        """One task's blocks: read, compute, write where there is a sink, report, yield."""
        for number, symbols in enumerate(blocks):
            started = time.perf_counter()
            bars = read_group(self.source, symbols, self.store)
            read = time.perf_counter()
            features, rejected = compute_checked(bars, self.spec)
            computed = time.perf_counter()
            block = features
            if self.sink is not None:
                stored = self.sink.write(features, self.spec, f"{task:05d}-{number:03d}")
                block = pa.Table.from_pylist(
                    [{"rows": features.num_rows, "stored": stored}], schema=SINK_SCHEMA
                )
            seconds = {
                "read": read - started,
                "compute": computed - read,
                "write": time.perf_counter() - computed,
            }
            if self.tally is not None:
                ray.get(self.tally.add.remote(rejected, seconds))
            yield block


def feature_dataset(
    source: BarsInput,
    spec: FeatureSpec,
    store: OfflineStoreHandle | None = None,
    parallelism: int | None = None,
    counts: dict[str, int] | None = None,
    tally: ray.actor.ActorHandle | None = None,
    sink: FeatureSink | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of the spec's features for every symbol of ``source``.

    Args:
        source: where the bars are.
        spec: the features to compute.
        store: the offline-store actor (store input only).
        parallelism: most read tasks (default: twice the cluster's CPUs).
        counts: rows per symbol of ``source`` when already known (from :func:`symbol_counts`).
        tally: a :class:`TaskTally` that counts, per reason, the bars left out because they
            break the bar rules, and the seconds per step (read it once the dataset is
            consumed).
        sink: when given, the tasks write the features there themselves and the dataset
            holds one :data:`SINK_SCHEMA` row per block (see :func:`write_features`).

    Returns:
        A dataset of ``symbol, ts`` and the spec's columns, in blocks of whole symbols (or the
        sink's summary rows).
    """
    datasource = FeatureDatasource(source, spec, store, counts, tally, sink)
    if parallelism is None:
        parallelism = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks = len(datasource.groups(parallelism))
    return ray.data.read_datasource(datasource, override_num_blocks=tasks)


def write_features(
    source: BarsInput,
    spec: FeatureSpec,
    sink: FeatureSink,
    store: OfflineStoreHandle | None = None,
    parallelism: int | None = None,
    counts: dict[str, int] | None = None,
    tally: ray.actor.ActorHandle | None = None,
) -> tuple[int, int]:
    """Computes the features and has each read task write its own to ``sink``.

    Arguments as for :func:`feature_dataset`.

    Returns:
        ``(rows, stored)``: feature rows written, rows upserted into the store.
    """
    dataset = feature_dataset(source, spec, store, parallelism, counts, tally, sink)
    rows = stored = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += sum(batch.column("rows").to_pylist())
        stored += sum(batch.column("stored").to_pylist())
    return rows, stored
