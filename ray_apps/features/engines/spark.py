"""The Spark engine: RayDP runs Spark executors as Ray actors; the same kernels run per symbol.

Bars are read by Spark (Parquet or CSV, so larger than memory is fine), hash-partitioned by
symbol and sorted by symbol and time within each partition, so every symbol is one run in one
partition. ``mapInArrow`` then hands each partition's Arrow batches to the kernels: batches are
gathered into tables of whole symbols (:func:`whole_symbol_tables`) and given to
:func:`compute_checked`, the very function the Ray Data engine runs, so the two give identical
numbers, with no pandas conversion on the way in or out (Spark 3.5, the one RayDP 1.6 ships,
has ``mapInArrow`` but not ``groupBy().applyInArrow``, which came with Spark 4.0). Bars that
break the bar rules are left out, and counted per reason in a separate pass. The result goes
back to Ray Data with ``ray.data.from_spark`` for training.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, ConfigDict, Field

from ray_apps._private.ray_cluster import require_task_cpus
from ray_apps.errors import UserError
from ray_apps.features.bar_checks import VALUE_REASONS, check_bars
from ray_apps.features.batch import CHECKED_COLUMNS, INPUT_COLUMNS, compute_checked
from ray_apps.features.sources import BarsInput, read_all
from ray_apps.features.spec import FeatureSpec
from ray_apps.stores.offline_actor import OfflineStoreHandle

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_OPENS = (
    "java.lang",
    "java.lang.invoke",
    "java.io",
    "java.net",
    "java.nio",
    "java.math",
    "java.text",
    "java.util",
    "java.util.concurrent",
    "java.util.concurrent.atomic",
    "sun.nio.ch",
    "sun.nio.cs",
    "sun.security.action",
    "sun.util.calendar",
)
JAVA_17_OPTIONS = " ".join(
    ["-XX:+IgnoreUnrecognizedVMOptions"]
    + [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in _OPENS]
)
"""RayDP on Java 17 fails in ``from_spark`` without these module openings."""


ROWS_PER_PARTITION = 250_000
"""Rows per Spark shuffle partition aimed at by :func:`partitions_for`."""
MIN_ROWS_PER_CALL = 100_000
"""Rows of whole symbols gathered from Spark's Arrow batches before the kernels run."""


class SparkConfig(BaseModel):
    """Resources of the RayDP Spark application."""

    model_config = ConfigDict(extra="forbid")

    executors: int = Field(1, ge=1, description="Spark executors (Ray actors).")
    executor_cores: int = Field(1, ge=1, description="Cores per executor.")
    executor_memory: str = Field(
        "2GB", description="Heap per executor; it caches the result for from_spark."
    )
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions.")


def start_spark(config: SparkConfig, app_name: str = "ray-apps-features") -> SparkSession:
    """Starts (or returns the running) RayDP Spark session on the connected Ray cluster.

    Raises:
        UserError: the cluster has no CPU left beside the executors'. Each executor actor
            holds its cores for the session's life, and ``ray.data.from_spark`` then waits
            forever for a CPU to run its tasks on.
    """
    import raydp

    cpus = int(ray.cluster_resources().get("CPU", 0))
    wanted = config.executors * config.executor_cores
    if cpus <= wanted:
        raise UserError(
            f"spark: {config.executors} executor(s) x {config.executor_cores} core(s) need "
            f"{wanted + 1} CPUs in the Ray cluster ({wanted} held by the executors, 1 for "
            f"Ray Data to take their output); the cluster has {cpus}"
        )
    require_task_cpus(wanted + 1, "features compute --engine spark")

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return raydp.init_spark(
        app_name=app_name,
        num_executors=config.executors,
        executor_cores=config.executor_cores,
        executor_memory=config.executor_memory,
        configs={
            "spark.driver.extraJavaOptions": JAVA_17_OPTIONS,
            "spark.executor.extraJavaOptions": JAVA_17_OPTIONS,
            "spark.ray.raydp_app_master.extraJavaOptions": JAVA_17_OPTIONS,
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        },
    )


def stop_spark() -> None:
    """Stops the RayDP Spark application and its executor actors."""
    import raydp

    raydp.stop_spark()


def feature_frame(
    spark: SparkSession,
    source: BarsInput,
    spec: FeatureSpec,
    store: OfflineStoreHandle | None = None,
) -> DataFrame:
    """A Spark DataFrame of ``symbol, ts`` and the spec's columns.

    Store input is exported to a temporary Parquet file first (the embedded store lives in
    one process); file input is read by Spark directly.
    """
    return _features(bars_frame(spark, source, store), spec)


def bars_frame(
    spark: SparkSession, source: BarsInput, store: OfflineStoreHandle | None = None
) -> DataFrame:
    """The input bars as a Spark DataFrame: the input columns, and open where there is one."""
    from pyspark.sql import functions as F

    bars = _read(spark, source, store)
    if source.symbols:
        bars = bars.where(F.col("symbol").isin(list(source.symbols)))
    columns = [c for c in (*INPUT_COLUMNS, *CHECKED_COLUMNS) if c in bars.columns]
    return bars.select(*columns).withColumn("ts", F.to_timestamp("ts"))


def rejected_counts(bars: DataFrame) -> dict[str, int]:
    """Bars that break the bar rules, per reason (one pass, no shuffle of the bars)."""
    counted = bars.mapInArrow(_count_rejected, schema="code int, bars long")
    totals = counted.groupBy("code").sum("bars").collect()
    return {VALUE_REASONS[int(row[0]) - 1]: int(row[1]) for row in totals}


@contextmanager
def feature_dataset(
    spark: SparkSession,
    source: BarsInput,
    spec: FeatureSpec,
    store: OfflineStoreHandle | None = None,
    rejected: Counter[str] | None = None,
) -> Iterator[ray.data.Dataset]:
    """The Spark engine's features as a Ray Dataset (``ray.data.from_spark``), while in use.

    ``from_spark`` pins the result's Arrow bytes in the executors' block manager until
    released; leaving the ``with`` block releases them, so a long-lived session computing
    several times does not fill the executors' heap with earlier results.

    Args:
        spark: the RayDP session.
        source: where the bars are.
        spec: the features to compute.
        store: the offline-store actor (store input only).
        rejected: when given, the bars left out per reason are added to it first.
    """
    from raydp.spark.dataset import release_spark_recoverable

    bars = bars_frame(spark, source, store)
    if rejected is not None:
        rejected.update(rejected_counts(bars))
    frame = _features(bars, spec)
    try:
        yield ray.data.from_spark(frame)
    finally:
        release_spark_recoverable(frame)


def partitions_for(rows: int, executors: int) -> int:
    """Shuffle partitions for ``rows``: about 250k rows each, at least 4 per executor.

    A partition's Arrow bytes are built in one executor's heap; small partitions keep that
    bounded whatever the input size.
    """
    return max(4 * executors, -(-rows // ROWS_PER_PARTITION))


def _read(spark: SparkSession, source: BarsInput, store: OfflineStoreHandle | None):
    if source.path is None:
        export = Path(tempfile.mkdtemp(prefix="ray-apps-spark-")) / "bars.parquet"
        pq.write_table(read_all(source, store), export)
        return spark.read.parquet(str(export))
    if not source.path.exists():
        raise UserError(f"{source.path}: input file not found")
    if source.path.suffix.lower() == ".csv":
        return spark.read.csv(str(source.path), header=True, inferSchema=True)
    return spark.read.parquet(str(source.path))


def whole_symbol_tables(
    batches: Iterable[pa.RecordBatch], min_rows: int = MIN_ROWS_PER_CALL
) -> Iterator[pa.Table]:
    """Tables of whole symbols from batches sorted by symbol.

    Batches are gathered until ``min_rows`` rows are in hand; the rows before the last
    batch's last symbol then make one table, and that symbol's rows start the next.

    Args:
        batches: record batches with a ``symbol`` column, sorted by symbol; a symbol's rows
            may span several batches.
        min_rows: rows to gather before cutting at a symbol boundary.
    """
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows < min_rows:
            continue
        symbols = batch.column("symbol")
        cut = pc.index(symbols, symbols[-1]).as_py()  # the first row of the batch's last symbol
        if cut is None or cut <= 0:
            continue  # the batch is one symbol (or ends in nulls): keep gathering
        yield pa.Table.from_batches([*pending[:-1], batch.slice(0, cut)])
        pending = [batch.slice(cut)]
        rows = batch.num_rows - cut
    if pending:
        yield pa.Table.from_batches(pending)


def arrow_features(
    spec: FeatureSpec,
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: a symbol-sorted partition's batches to feature batches."""

    def compute(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for bars in whole_symbol_tables(batches):
            yield from compute_checked(bars, spec)[0].to_batches()

    return compute


def _features(bars: DataFrame, spec: FeatureSpec) -> DataFrame:
    ordered = bars.repartition("symbol").sortWithinPartitions("symbol", "ts")
    return ordered.mapInArrow(arrow_features(spec), _schema(spec))


def _count_rejected(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Rejected bars per reason code: 1 + the index in ``VALUE_REASONS``."""
    counts: Counter[str] = Counter()
    for batch in batches:
        counts.update(check_bars(pa.Table.from_batches([batch]))[1])
    codes = [VALUE_REASONS.index(reason) + 1 for reason in counts]
    yield pa.record_batch(
        [pa.array(codes, pa.int32()), pa.array(list(counts.values()), pa.int64())],
        names=["code", "bars"],
    )


def _schema(spec: FeatureSpec) -> str:
    return ", ".join(["symbol string", "ts timestamp"] + [f"{c} double" for c in spec.columns])
