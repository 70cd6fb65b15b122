"""The Ray Data engine: whole symbols per read task, the compiled kernels inside it, no shuffle.

A custom datasource hands out read tasks that each load a group of whole symbols (from the
offline store through its actor, or from a file with a pushed-down symbol filter) and run
:func:`compute_table` on them before yielding, so no ``groupby`` shuffle is needed. Computing
inside the read keeps every symbol's history in one piece even where Ray Data splits or
coalesces blocks downstream. The result is an ordinary lazy Dataset: write it, map it further
or feed it to training. Bars that break the bar rules are left out before the kernels run and
counted per reason in a :class:`RejectTally` actor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ray_apps.features.batch import compute_checked
from ray_apps.features.sources import BarsInput, partition, read_group, symbol_counts
from ray_apps.features.spec import FeatureSpec
from ray_apps.stores.offline_actor import OfflineStoreHandle

MAX_ROWS_PER_BLOCK = 250_000
"""Blocks stay well under Ray Data's 128 MiB target with about 25 float columns."""
MIN_ROWS_PER_TASK = 100_000
"""Fewer, larger read tasks: a task costs milliseconds, a bar about 0.2 microseconds."""
MAX_ROWS_PER_TASK = 2_000_000
"""Bounds a task's memory: about 400 MB of bars and features."""


@ray.remote(num_cpus=0)
class RejectTally:
    """Bars the read tasks left out, per reason, summed over the tasks."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, counts: dict[str, int]) -> None:
        """Adds one task's counts."""
        self._counts.update(counts)

    def counts(self) -> dict[str, int]:
        """The counts so far."""
        return dict(self._counts)


class FeatureDatasource(Datasource):
    """Features of bars read in groups of whole symbols.

    Args:
        source: where the bars are.
        spec: the features to compute.
        store: the offline-store actor (store input only).
        counts: rows per symbol when the caller already has them (saves a query).
        tally: a :class:`RejectTally` that counts the bars left out (uncounted when None).
    """

    def __init__(
        self,
        source: BarsInput,
        spec: FeatureSpec,
        store: OfflineStoreHandle | None = None,
        counts: dict[str, int] | None = None,
        tally: ray.actor.ActorHandle | None = None,
    ) -> None:
        self.source = source
        self.spec = spec
        self.store = store
        self.counts = counts if counts is not None else symbol_counts(source, store)
        self.tally = tally

    def groups(self, parallelism: int) -> list[list[str]]:
        """The symbol groups of at most ``parallelism`` read tasks (fewer for small inputs)."""
        total = sum(self.counts.values())
        parts = max(1, min(parallelism, total // MIN_ROWS_PER_TASK))
        # big inputs: a whole number of rounds of ``parallelism`` tasks, so no CPU idles at the end
        rounds = -(-total // (parts * MAX_ROWS_PER_TASK))
        return partition(self.counts, parts * rounds, MAX_ROWS_PER_TASK)

    def estimate_inmemory_data_size(self) -> int:
        """The feature table's size: keys plus 8 bytes a feature, per bar."""
        return (16 + 8 * len(self.spec.columns)) * sum(self.counts.values())

    def get_read_tasks(self, parallelism: int, **_: object) -> list[ReadTask]:
        """One read task per group of whole symbols; each yields feature blocks."""
        source, spec, store, tally = self.source, self.spec, self.store, self.tally
        tasks = []
        for group in self.groups(parallelism):
            rows = sum(self.counts[s] for s in group)
            blocks = partition({s: self.counts[s] for s in group}, 1, MAX_ROWS_PER_BLOCK)

            def read(blocks: list[list[str]] = blocks) -> Iterable[pa.Table]:
                for symbols in blocks:
                    features, rejected = compute_checked(read_group(source, symbols, store), spec)
                    if rejected and tally is not None:
                        ray.get(tally.add.remote(rejected))
                    yield features

            metadata = BlockMetadata(
                num_rows=rows,
                size_bytes=(16 + 8 * len(spec.columns)) * rows,
                exec_stats=None,
                input_files=None,
            )
            tasks.append(ReadTask(read, metadata))
        return tasks


def feature_dataset(
    source: BarsInput,
    spec: FeatureSpec,
    store: OfflineStoreHandle | None = None,
    parallelism: int | None = None,
    counts: dict[str, int] | None = None,
    tally: ray.actor.ActorHandle | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of the spec's features for every symbol of ``source``.

    Args:
        source: where the bars are.
        spec: the features to compute.
        store: the offline-store actor (store input only).
        parallelism: most read tasks (default: twice the cluster's CPUs).
        counts: rows per symbol of ``source`` when already known (from :func:`symbol_counts`).
        tally: a :class:`RejectTally` that counts, per reason, the bars left out because they
            break the bar rules (read it once the dataset is consumed).

    Returns:
        A dataset of ``symbol, ts`` and the spec's columns, in blocks of whole symbols.
    """
    datasource = FeatureDatasource(source, spec, store, counts, tally)
    if parallelism is None:
        parallelism = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks = len(datasource.groups(parallelism))
    return ray.data.read_datasource(datasource, override_num_blocks=tasks)
