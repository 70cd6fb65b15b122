"""Compute and materialize features: ``python -m ray_apps.jobs.features compute|materialize``.

Runs the same as ``ray-apps features compute|materialize`` and as
``ray job submit -- python -m ray_apps.jobs.features ...``.

- ``compute`` reads bars (the offline store or a CSV/Parquet file), runs one engine (``ray``,
  ``spark`` or ``incremental``) and writes ``symbol, ts`` plus the spec's columns to a Parquet
  file and/or the store's ``features`` table.
- ``materialize`` copies the newest stored feature row of each symbol to Redis.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, ConfigDict, Field

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.features.batch import output_schema
from ray_apps.features.engines.incremental import IncrementalEngine
from ray_apps.features.sources import BarsInput, read_group, symbol_counts
from ray_apps.features.spec import DEFAULT_SPEC_PATH, FeatureSpec, load_spec
from ray_apps.jobs import run_job
from ray_apps.stores.offline_actor import offline_store
from ray_apps.stores.online import OnlineStore, WriteSummary, redis_client

Echo = Callable[[str], None]
Engine = Literal["ray", "spark", "incremental"]
PROGRESS_EVERY_S = 2.0


class ComputeRequest(BaseModel):
    """One ``features compute`` run.

    Attributes:
        spec: the feature spec file.
        engine: which engine computes.
        source: where the bars are.
        output: a Parquet file to write (one file).
        to_store: also upsert the rows into the store's ``features`` table.
        parallelism: most Ray Data read tasks (default: twice the cluster's CPUs).
        spark_executors: RayDP executors for the spark engine.
        spark_executor_memory: heap per executor; the result is cached there before Ray
            Data takes it, so give about 1 GB per million feature rows an executor holds,
            plus 1 GB (10M rows on 2 executors took 6 GB each; 4 GB ran out).
    """

    model_config = ConfigDict(extra="forbid")

    spec: Path = DEFAULT_SPEC_PATH
    engine: Engine = "ray"
    source: BarsInput = Field(default_factory=BarsInput)
    output: Path | None = None
    to_store: bool = False
    parallelism: int | None = Field(None, ge=1)
    spark_executors: int = Field(1, ge=1)
    spark_executor_memory: str = Field("2GB", pattern=r"^[0-9]+[KMGT]?B$")


class ComputeSummary(BaseModel):
    """What a compute run did."""

    engine: str
    rows: int = 0
    symbols: int = 0
    seconds: float = 0.0
    output: Path | None = None
    stored: int = 0

    def render(self) -> str:
        """A few lines for the terminal."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines = [
            f"features ({self.engine}): {self.rows:,} rows of {self.symbols:,} symbols in "
            f"{self.seconds:.1f} s ({rate:,.0f} rows/s)"
        ]
        if self.output is not None:
            lines.append(f"  written to   {self.output}")
        if self.stored:
            lines.append(f"  stored       {self.stored:,} rows in the features table")
        return "\n".join(lines)


def run_compute(request: ComputeRequest, settings: Settings, echo: Echo = print) -> ComputeSummary:
    """Computes features with the requested engine and writes them where asked."""
    spec = load_spec(request.spec)
    if request.output is not None and request.output.suffix.lower() != ".parquet":
        raise UserError(f"--output {request.output}: write a .parquet file")
    connect_ray(settings)
    store = offline_store(settings) if request.source.path is None or request.to_store else None
    counts = symbol_counts(request.source, store)
    total = sum(counts.values())
    echo(
        f"features: {request.engine} engine, {len(spec.columns)} columns of spec "
        f"{spec.version} over {total:,} bars of {len(counts):,} symbols from "
        f"{request.source.label}"
    )
    summary = ComputeSummary(engine=request.engine, symbols=len(counts), output=request.output)
    started = time.monotonic()
    writer = pq.ParquetWriter(request.output, output_schema(spec)) if request.output else None
    pending: list[ray.ObjectRef] = []
    last_report = started
    try:
        for block in _blocks(request, spec, store, counts):
            if writer is not None:
                writer.write_table(block)
            if request.to_store:
                pending.append(
                    store.insert_features.remote(block, request.source.interval, spec.version)
                )
                if len(pending) > 2:
                    summary.stored += ray.get(pending.pop(0))
            summary.rows += block.num_rows
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                last_report = time.monotonic()
                rate = summary.rows / (last_report - started)
                echo(f"  {summary.rows:>12,} / {total:,} rows ({rate:,.0f} rows/s)")
        summary.stored += sum(ray.get(pending))
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.monotonic() - started
    return summary


def _blocks(
    request: ComputeRequest,
    spec: FeatureSpec,
    store: ray.actor.ActorHandle | None,
    counts: dict[str, int],
) -> Iterator[pa.Table]:
    if request.engine == "incremental":
        bars = read_group(request.source, sorted(counts), store)
        yield from _incremental_blocks(bars, spec)
        return
    if request.engine == "ray":
        from ray_apps.features.engines.ray_data import feature_dataset

        dataset = feature_dataset(request.source, spec, store, request.parallelism, counts)
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        return
    from ray_apps.features.engines import spark

    config = spark.SparkConfig(
        executors=request.spark_executors,
        executor_memory=request.spark_executor_memory,
        shuffle_partitions=spark.partitions_for(sum(counts.values()), request.spark_executors),
    )
    session = spark.start_spark(config)
    try:
        with spark.feature_dataset(session, request.source, spec, store) as dataset:
            yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        spark.stop_spark()


def _incremental_blocks(bars: pa.Table, spec: FeatureSpec) -> Iterator[pa.Table]:
    """Replays the bars in time order, one micro-batch per bar time, through the engine."""
    bars = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    engine = IncrementalEngine(spec)
    times = bars.column("ts").cast(pa.int64()).to_numpy()
    bounds = np.flatnonzero(np.diff(times)) + 1
    edges = [0, *bounds.tolist(), bars.num_rows]
    chunk_rows = 0
    chunk: list[pa.Table] = []
    for first, last in itertools.pairwise(edges):
        chunk.append(engine.update(bars.slice(first, last - first)))
        chunk_rows += last - first
        if chunk_rows >= 100_000:
            yield pa.concat_tables(chunk)
            chunk, chunk_rows = [], 0
    if chunk:
        yield pa.concat_tables(chunk)


class MaterializeSummary(BaseModel):
    """What a materialize run did."""

    symbols: int
    result: WriteSummary
    seconds: float

    def render(self) -> str:
        """One line for the terminal."""
        return (
            f"materialized {self.result.written:,} of {self.symbols:,} symbols to Redis in "
            f"{self.seconds:.1f} s ({self.result.stale:,} kept: Redis already had newer)"
        )


def run_materialize(
    settings: Settings,
    spec_path: Path = DEFAULT_SPEC_PATH,
    symbols: list[str] | None = None,
    interval: str = "1d",
) -> MaterializeSummary:
    """Writes the newest stored feature row of each symbol to the online store."""
    spec = load_spec(spec_path)
    started = time.monotonic()
    connect_ray(settings)
    latest = ray.get(
        offline_store(settings).features.remote(
            symbols=symbols, interval=interval, columns=spec.columns, latest=True
        )
    )
    if latest.empty:
        raise UserError(
            f"no {interval} features stored; run `ray-apps features compute --from-store` first"
        )
    versions = set(latest["spec_version"])
    if versions != {spec.version}:
        raise UserError(
            f"stored features are of spec version(s) {sorted(versions)}, not {spec.version}; "
            "recompute them with this spec first"
        )
    table = pa.Table.from_pandas(latest[["symbol", "ts", *spec.columns]], preserve_index=False)
    result = OnlineStore(redis_client(settings)).write(table, spec.version)
    return MaterializeSummary(
        symbols=len(latest), result=result, seconds=time.monotonic() - started
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``compute`` and ``materialize`` actions, shared by the CLI and this job."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    compute = actions.add_parser("compute", help="compute features with one engine")
    compute.add_argument("--spec", type=Path, default=DEFAULT_SPEC_PATH, help="feature spec")
    compute.add_argument(
        "--engine", choices=["ray", "spark", "incremental"], default="ray", help="engine"
    )
    where = compute.add_mutually_exclusive_group(required=True)
    where.add_argument("--input", type=Path, help="CSV or Parquet bars file")
    where.add_argument("--from-store", action="store_true", help="read bars from the store")
    compute.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="only these symbols")
    compute.add_argument("--interval", default="1d", help="bar interval (default 1d)")
    compute.add_argument("--output", type=Path, help="write the features to this .parquet file")
    compute.add_argument(
        "--to-store",
        action="store_true",
        help="upsert into the store's features table (the default with --from-store)",
    )
    compute.add_argument("--parallelism", type=int, help="most Ray Data read tasks")
    compute.add_argument("--spark-executors", type=int, default=1, help="RayDP executors")
    compute.add_argument(
        "--spark-executor-memory",
        default="2GB",
        help="heap per RayDP executor, e.g. 6GB (about 1 GB per million feature rows an "
        "executor holds, plus 1 GB)",
    )
    materialize = actions.add_parser(
        "materialize", help="copy the newest stored features of each symbol to Redis"
    )
    materialize.add_argument("--spec", type=Path, default=DEFAULT_SPEC_PATH)
    materialize.add_argument("--symbols", nargs="+", metavar="SYMBOL")
    materialize.add_argument("--interval", default="1d")


def compute_request(args: argparse.Namespace) -> ComputeRequest:
    """The compute request the parsed options describe."""
    return ComputeRequest(
        spec=args.spec,
        engine=args.engine,
        source=BarsInput(path=args.input, symbols=args.symbols, interval=args.interval),
        output=args.output,
        to_store=args.to_store or args.from_store,
        parallelism=args.parallelism,
        spark_executors=args.spark_executors,
        spark_executor_memory=args.spark_executor_memory,
    )


def run_action(args: argparse.Namespace, settings: Settings) -> str:
    """Runs the parsed action; returns its summary text."""
    if args.action == "compute":
        return run_compute(compute_request(args), settings).render()
    return run_materialize(settings, args.spec, args.symbols, args.interval).render()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.features ...``."""
    return run_job("ray_apps.jobs.features", __doc__, add_arguments, run_action, argv)


if __name__ == "__main__":
    sys.exit(main())
