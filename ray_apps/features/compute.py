"""One feature computation: bars in, one engine, features out to Parquet and/or the store.

:func:`compute_features` is what ``ray-apps features compute`` and the feature job run, and
what training calls when the store holds no features of its spec. It takes an open
offline-store handle and a connected Ray; it neither connects nor opens anything itself.
Engines are looked up by name in :data:`ENGINES`.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import ray
from pydantic import BaseModel, ConfigDict, Field

from ray_apps._private.ray_cluster import require_task_cpus
from ray_apps._private.ray_data_console import quiet_ray_data_console
from ray_apps.errors import UserError
from ray_apps.features.batch import normalize_bars, output_schema
from ray_apps.features.engines.incremental import IncrementalEngine, replay
from ray_apps.features.outputs import features_writer
from ray_apps.features.sources import BarsInput, read_group, resolve_interval, symbol_counts
from ray_apps.features.spec import FeatureSpec
from ray_apps.stores.offline_actor import OfflineStoreHandle

Echo = Callable[[str], None]
EngineName = Literal["ray", "spark", "incremental"]
PROGRESS_EVERY_S = 2.0
STORE_WRITES_IN_FLIGHT = 2
"""Feature blocks being inserted while the next ones are computed."""


class ComputeRequest(BaseModel):
    """One feature computation.

    Attributes:
        engine: which engine computes: ``ray`` (Ray Data), ``spark`` (Spark on Ray) or
            ``incremental`` (the stream engine, replaying the bars in time order).
        source: where the bars are (the store or a file), which symbols, interval and range.
        output: a Parquet file to write (one file).
        to_store: also upsert the rows into the store's ``features`` table, under the spec's
            version and the bars' interval.
        parallelism: most Ray Data read tasks (default: twice the cluster's CPUs).
        spark_executors: RayDP executors for the spark engine.
        spark_executor_memory: heap per executor; the result is cached there before Ray
            Data takes it, so give about 1 GB per million feature rows an executor holds,
            plus 1 GB (10M rows on 2 executors took 6 GB each; 4 GB ran out).
    """

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = "ray"
    source: BarsInput = Field(default_factory=BarsInput)
    output: Path | None = None
    to_store: bool = False
    parallelism: int | None = Field(None, ge=1)
    spark_executors: int = Field(1, ge=1)
    spark_executor_memory: str = Field("2GB", pattern=r"^[0-9]+[KMGT]?B$")


class ComputeSummary(BaseModel):
    """What a compute run did.

    Attributes:
        engine: the engine that ran.
        spec_version: the spec's version label.
        interval: the bars' interval (the one stored rows are keyed by).
        rows: feature rows computed.
        symbols: symbols in the input.
        seconds: time spent computing and writing.
        output: the Parquet file written, if any.
        stored: rows upserted into the features table.
        rejected: input bars left out because they break a bar rule, per reason.
    """

    engine: str
    spec_version: str
    interval: str
    rows: int = 0
    symbols: int = 0
    seconds: float = 0.0
    output: Path | None = None
    stored: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)

    def render(self) -> str:
        """A few lines for the terminal."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines = [
            f"features ({self.engine}): {self.rows:,} rows of {self.symbols:,} symbols "
            f"({self.interval} bars, spec {self.spec_version}) in {self.seconds:.1f} s "
            f"({rate:,.0f} rows/s)"
        ]
        if self.rejected:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.rejected.items()))
            lines.append(
                f"  rejected     {sum(self.rejected.values()):,} bars ({reasons}): not computed"
            )
        if self.output is not None:
            lines.append(f"  written to   {self.output}")
        if self.stored:
            lines.append(f"  stored       {self.stored:,} rows in the features table")
        return "\n".join(lines)


@dataclass
class EngineRun:
    """What an engine gets: the request, the spec, the store and the input's symbol counts.

    Engines add the bars they leave out to :attr:`rejected` (per reason) by the time their
    last block is taken. An engine that stores rows itself (from its tasks, not through the
    blocks it yields) adds the rows it computed so to :attr:`sunk_rows` and the rows the
    store took to :attr:`stored_rows`.
    """

    request: ComputeRequest
    spec: FeatureSpec
    store: OfflineStoreHandle | None
    counts: dict[str, int]
    interval: str
    rejected: Counter[str] = field(default_factory=Counter)
    sunk_rows: int = 0
    stored_rows: int = 0


def _ray_blocks(run: EngineRun) -> Iterator[pa.Table]:
    """The Ray Data engine's blocks; with ``to_store`` and no output, its tasks store them.

    Storing from the read tasks keeps the feature bytes off the driver and the object store:
    the dataset then holds one summary row per block (:data:`ray_data.SINK_SCHEMA`).
    """
    from ray_apps.features.engines.ray_data import (
        FeatureSink,
        TaskTally,
        feature_dataset,
        write_features,
    )

    require_task_cpus(1, "features compute --engine ray")
    quiet_ray_data_console()
    tally = TaskTally.remote()
    request = run.request
    inputs = {
        "source": request.source,
        "spec": run.spec,
        "store": run.store,
        "parallelism": request.parallelism,
        "counts": run.counts,
        "tally": tally,
    }
    if request.to_store and request.output is None:
        sink = FeatureSink(store=run.store, interval=run.interval)
        run.sunk_rows, run.stored_rows = write_features(sink=sink, **inputs)
    else:
        dataset = feature_dataset(**inputs)
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    run.rejected.update(ray.get(tally.counts.remote()))


def _spark_blocks(run: EngineRun) -> Iterator[pa.Table]:
    from ray_apps.features.engines import spark

    request = run.request
    config = spark.SparkConfig(
        executors=request.spark_executors,
        executor_memory=request.spark_executor_memory,
        shuffle_partitions=spark.partitions_for(sum(run.counts.values()), request.spark_executors),
    )
    session = spark.start_spark(config)
    try:
        with spark.feature_dataset(
            session, request.source, run.spec, run.store, run.rejected
        ) as dataset:
            yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        spark.stop_spark()


def _incremental_blocks(run: EngineRun) -> Iterator[pa.Table]:
    bars = read_group(run.request.source, sorted(run.counts), run.store)
    engine = IncrementalEngine(run.spec)
    yield from replay(engine, normalize_bars(bars, coerce=True))
    run.rejected.update(engine.rejected)


ENGINES: dict[str, Callable[[EngineRun], Iterator[pa.Table]]] = {
    "ray": _ray_blocks,
    "spark": _spark_blocks,
    "incremental": _incremental_blocks,
}
"""Each engine's feature blocks, by engine name."""


def compute_features(
    request: ComputeRequest,
    spec: FeatureSpec,
    store: OfflineStoreHandle | None,
    echo: Echo = print,
) -> ComputeSummary:
    """Computes the spec's features of the requested bars and writes them where asked.

    Ray must be connected. Bars that break a bar rule are left out (never fed to the
    kernels) and counted per reason in the summary.

    Args:
        request: engine, input bars, outputs.
        spec: the features to compute.
        store: the offline-store actor; needed for store input and for ``to_store``.
        echo: where progress lines go.

    Returns:
        What was computed, written, stored and left out.

    Raises:
        UserError: the output is not a .parquet file, the store is needed but not given, the
            input has no bars or several intervals.
    """
    if request.output is not None and request.output.suffix.lower() != ".parquet":
        raise UserError(f"--output {request.output}: write a .parquet file")
    if store is None and (request.source.path is None or request.to_store):
        raise UserError("features: reading or storing in the offline store needs its handle")
    counts = symbol_counts(request.source, store)
    interval = resolve_interval(request.source, counts)
    total = sum(counts.values())
    echo(
        f"features: {request.engine} engine, {len(spec.columns)} columns of spec "
        f"{spec.version} over {total:,} {interval} bars of {len(counts):,} symbols from "
        f"{request.source.label}"
    )
    run = EngineRun(request, spec, store, counts, interval)
    summary = ComputeSummary(
        engine=request.engine,
        spec_version=spec.version,
        interval=interval,
        symbols=len(counts),
        output=request.output,
    )
    started = last_report = time.monotonic()
    pending: list[ray.ObjectRef] = []
    with contextlib.ExitStack() as outputs:
        writer = None
        if request.output:
            writer = outputs.enter_context(features_writer(request.output, output_schema(spec)))
        for block in ENGINES[request.engine](run):
            if writer is not None:
                writer.write_table(block)
            if request.to_store:
                pending.append(
                    store.insert_features.remote(block, interval, spec.version, spec.fingerprint)
                )
                if len(pending) > STORE_WRITES_IN_FLIGHT:
                    summary.stored += ray.get(pending.pop(0))
            summary.rows += block.num_rows
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                last_report = time.monotonic()
                rate = summary.rows / (last_report - started)
                echo(f"  {summary.rows:>12,} / {total:,} rows ({rate:,.0f} rows/s)")
        if pending:
            summary.stored += sum(ray.get(pending))
    summary.rows += run.sunk_rows
    summary.stored += run.stored_rows
    summary.rejected = dict(run.rejected)
    summary.seconds = time.monotonic() - started
    return summary
