"""Feature throughput: every engine beside TA-Lib and pandas-ta-classic, on 1 and 2 CPUs.

Synthetic 15-minute bars (500 symbols by default) are written to a Parquet file; then, in the
same run:
  - baseline "talib": TA-Lib called per symbol for the default spec, one process;
  - baseline "pandas-ta-classic": its own pandas code (talib=False), one process, timed on the
    first --pta-symbols symbols (it is about 100x slower) and reported as rows/s;
  - "kernels": ray_apps' compiled kernels on the whole table, one process, no Ray (TA-Lib and
    the kernels take turns, 5 runs each, the fastest counts);
  - "ray": the Ray Data engine from the Parquet file, in a fresh local Ray with 1 and with 2
    CPUs, twice: each read task writing its own Parquet parts ("tasks write parquet") and to a
    materialized dataset ("to object store");
  - "spark": the Spark-on-Ray engine (RayDP), 1 and 2 executors of one core each, in a Ray
    with one CPU more (``from_spark`` runs there) (skip with --no-spark);
  - "incremental": bar updates/s with micro-batches of one bar per symbol, one core, without
    and with a checkpoint of the engine's state (``IncrementalEngine.save``) once a second
    (the stream consumer's cadence: it checkpoints after each flush, ``offline_flush_ms``
    1000) and after every micro-batch (a stress figure: each copies every symbol's state),
    taking turns with the batch kernels (``compute_table``) so the ratio per bar is of the
    same moments; then where the time of a run checkpointing every micro-batch goes per bar
    (bar rules and replay check, kernel, checkpoint, the rest).

The summary lines compare the kernels with TA-Lib and the incremental engine with the kernels,
per bar, in this run, and say where each engine's time went: read, compute and write, in
microseconds per row (the Ray Data tasks' own timers, summed over tasks; for Spark, the
stages timed from the driver), beside the run's wall time times its CPUs.

    python bench/features.py [--symbols 500] [--bars 2000] [--no-spark] [--no-engines]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_apps.features.bar_checks import compiled_verdicts
from ray_apps.features.batch import compute_table
from ray_apps.features.engines.incremental import IncrementalEngine
from ray_apps.features.kernels import fused_kernel
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def talib_all(h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
    """The default spec with TA-Lib, the same outputs as ours (derived columns included)."""
    import talib

    np.log(talib.ROCR(c, 1))
    np.log(talib.ROCR(c, 5))
    sma = talib.SMA(c, 20)
    talib.EMA(c, 20)
    talib.RSI(c, 14)
    talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    (c - lower) / (upper - lower)
    (upper - lower) / middle
    talib.ATR(h, low, c, 14)
    talib.OBV(c, v)
    talib.STDDEV(np.log(c[1:] / c[:-1]), 20)
    (c - sma) / talib.STDDEV(c, 20)
    (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20)
    talib.STOCH(h, low, c, 14, 3, 0, 3, 0)
    talib.ADX(h, low, c, 14)


def per_symbol(table: pa.Table) -> list[tuple[np.ndarray, ...]]:
    frame = table.to_pandas()
    return [
        tuple(g[x].to_numpy(float) for x in ("high", "low", "close", "volume"))
        for _, g in frame.groupby("symbol", sort=False)
    ]


def best_rate(rows: int, run: Callable[[], object], repeats: int = 3) -> float:
    """Rows/s of the fastest of ``repeats`` runs (the in-process figures vary by about 20%)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return rows / best


def best_rates(rows: int, runs: dict[str, Callable[[], object]], repeats: int = 5) -> dict:
    """Rows/s of the fastest run of each, the runs taking turns (a busy machine slows all)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: rows / seconds for name, seconds in best.items()}


def bench_talib_and_kernels(table: pa.Table) -> dict[str, float]:
    """TA-Lib per symbol and the kernels on the whole table, taking turns."""
    series = per_symbol(table)

    def talib_run() -> None:
        for arrays in series:
            talib_all(*arrays)

    compute_table(table.slice(0, 100), SPEC)  # compiles or loads the spec's kernel
    runs = {
        "talib (baseline, 1 process)": talib_run,
        "kernels (1 process, no Ray)": lambda: compute_table(table, SPEC),
    }
    return best_rates(table.num_rows, runs)


def bench_pandas_ta(table: pa.Table, symbols: int) -> float:
    import pandas_ta_classic  # noqa: F401  (registers the functions)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/unit/features"))
    from feature_references import pandas_ta_reference

    frame = table.to_pandas()
    groups = [g for _, g in frame.groupby("symbol", sort=False)][:symbols]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bars in groups:
            pandas_ta_reference(bars)
    return sum(len(g) for g in groups) / (time.perf_counter() - started)


def bench_incremental(table: pa.Table) -> tuple[dict[str, float], dict[str, float]]:
    """Incremental bar updates/s, one micro-batch per bar time, without and with checkpoints.

    Returns the rates (the fastest of 3 runs each, taking turns) and where the time of a run
    checkpointing every micro-batch goes, in ns per bar: the bar rules and replay check, the
    kernel alone (the same calls, timed apart), the checkpoint, and the rest (symbol rows,
    arrays).
    """
    grouped = table  # each symbol's bars together, as the batch kernels read them
    table = table.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    symbols = table.column("symbol").to_pylist()
    micros = table.column("ts").cast(pa.int64()).to_numpy()
    arrays = [table.column(c).to_numpy() for c in ("high", "low", "close", "volume")]
    edges = [0, *(np.flatnonzero(np.diff(micros)) + 1).tolist(), table.num_rows]
    batches = [
        (symbols[first:last], micros[first:last], *(a[first:last] for a in arrays))
        for first, last in itertools.pairwise(edges)
    ]
    spent = dict.fromkeys(("total", "checkpoint", "kernel", "bar rules"), 0.0)

    def run(every_s: float | None) -> None:
        """The micro-batches, checkpointing once ``every_s`` seconds have passed (None: never)."""
        engine = IncrementalEngine(SPEC)
        clock = time.perf_counter
        started = saved = clock()
        for batch in batches:
            engine.update_arrays(*batch)
            if every_s is not None and clock() - saved >= every_s:
                saving = clock()
                engine.save()
                saved = clock()
                spent["checkpoint"] += saved - saving
        spent["total"] += clock() - started

    def parts() -> None:
        """The kernel and the bar rules alone, on the same micro-batches."""
        plan = SPEC.plan
        kernel = fused_kernel(plan.plan, plan.params, plan.state_size)
        index = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
        states = np.zeros((len(index), plan.state_size))
        last = np.full(len(index), np.iinfo(np.int64).min)
        clock = time.perf_counter
        names, _, *prices = batches[0]  # compiles both for these arguments, untimed
        warm = np.empty((len(names), len(plan.columns)))
        kernel.rows(states.copy(), np.arange(len(names)), *prices, warm)
        compiled_verdicts(*prices, prices[2], np.zeros(len(names), dtype=np.int8))
        for names, ts, *prices in batches:
            rows = np.fromiter(map(index.__getitem__, names), np.int64, len(names))
            out = np.empty((len(names), len(plan.columns)))
            checking = clock()
            compiled_verdicts(*prices, prices[2], np.zeros(len(names), dtype=np.int8))
            np.greater(ts, last[rows])
            computing = clock()
            kernel.rows(states, rows, *prices, out)
            spent["kernel"] += clock() - computing
            spent["bar rules"] += computing - checking

    rates = best_rates(
        table.num_rows,
        {
            "batch kernels, taking turns with incremental": lambda: compute_table(grouped, SPEC),
            "incremental (bar updates/s, 1 core)": lambda: run(None),
            "incremental, checkpoint once a second": lambda: run(1.0),
            "incremental, checkpoint every micro-batch": lambda: run(0.0),
        },
        repeats=3,
    )
    spent = dict.fromkeys(spent, 0.0)  # the split of a run checkpointing every micro-batch
    run(0.0)
    parts()
    per_bar = {name: seconds / table.num_rows * 1e9 for name, seconds in spent.items()}
    per_bar["rest (symbol rows, arrays)"] = per_bar["total"] - sum(
        per_bar[name] for name in ("checkpoint", "kernel", "bar rules")
    )
    return rates, per_bar


CHILD = """
import json, shutil, sys, tempfile, time, ray
from pathlib import Path
import pyarrow.parquet as pq
from ray_apps.features.sources import BarsInput
from ray_apps.features.spec import load_spec
engine, cpus, path, heap = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# Spark's executors hold their CPUs; from_spark needs one more to run on
extra = 0 if engine == "ray" else 1
ray.init(address="local", num_cpus=cpus + extra, include_dashboard=False, logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False
spec, source = load_spec(), BarsInput(path=path)
rows = pq.ParquetFile(path).metadata.num_rows
out = Path(tempfile.mkdtemp(prefix="bench-features-"))

def timed(run, clock):  # the fastest of 3 (the first also warms the workers: numba, JVM)
    best = None
    for _ in range(3):
        shutil.rmtree(out / "parts", ignore_errors=True)
        (out / "parts").mkdir()
        seconds, steps = run()
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "steps": steps}
    return {"rate": rows / best["seconds"], "clock": clock, **best}

if engine == "ray":
    from ray_apps.features.engines.ray_data import FeatureSink, TaskTally, feature_dataset
    from ray_apps.features.engines.ray_data import write_features

    def to_object_store():
        tally = TaskTally.remote()
        started = time.perf_counter()
        assert feature_dataset(source, spec, tally=tally).materialize().count() == rows
        return time.perf_counter() - started, ray.get(tally.seconds.remote())

    def tasks_write_parquet():
        tally = TaskTally.remote()
        sink = FeatureSink(folder=out / "parts")
        started = time.perf_counter()
        assert write_features(source, spec, sink, tally=tally)[0] == rows
        return time.perf_counter() - started, ray.get(tally.seconds.remote())

    results = {
        "parquet": timed(tasks_write_parquet, "tasks"),
        "materialize": timed(to_object_store, "tasks"),
    }
else:
    from ray_apps.features.engines import spark
    if heap == "auto":  # from_spark caches the result in the executors' heap
        heap = f"{max(2, 6 * rows // 10_000_000 // cpus + 3)}GB"  # 2 x 4GB failed at 10M
    partitions = spark.partitions_for(rows, cpus)
    config = spark.SparkConfig(executors=cpus, executor_memory=heap, shuffle_partitions=partitions)
    session = spark.start_spark(config)

    def noop(frame):  # runs the plan to the end, writes nothing
        started = time.perf_counter()
        frame.write.format("noop").mode("overwrite").save()
        return time.perf_counter() - started

    def to_ray_dataset():  # read: scan the bars; compute: shuffle, sort, kernels; write: hand-over
        read = noop(spark.bars_frame(session, source))
        computed = noop(spark.feature_frame(session, source, spec))
        started = time.perf_counter()
        with spark.feature_dataset(session, source, spec) as dataset:
            assert dataset.materialize().count() == rows
        total = time.perf_counter() - started  # the run timed: from_spark, from the bars
        return total, {"read": read, "compute": computed - read, "write": total - computed}

    results = {"materialize": timed(to_ray_dataset, "driver")}
shutil.rmtree(out, ignore_errors=True)
print("RESULT", json.dumps(results))
"""


def bench_engine(engine: str, cpus: int, path: Path, heap: str = "auto") -> dict[str, dict]:
    """Each way of running ``engine`` on ``cpus`` CPUs: its rate, wall seconds, step seconds.

    Ray Data: ``parquet`` (each read task writes its own Parquet parts) and ``materialize``
    (the features go to the object store); step seconds are the tasks' own timers, summed over
    tasks. Spark: ``materialize`` (``from_spark``); steps from the driver: read is a scan of
    the bars, compute the features plan run to the end (shuffle, sort, kernels) less the read,
    write the hand-over to Ray Data (the whole ``from_spark`` run less the compute).
    """
    done = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(cpus), str(path), heap],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.split(" ", 1)[1])
    causes = [x for x in done.stderr.splitlines() if "Error" in x or "Caused by" in x]
    print(f"  {engine} on {cpus} CPU(s) failed: {' | '.join(causes[-3:]) or done.stderr[-500:]}")
    return {}


ENGINE_MODES = {
    "parquet": "tasks write parquet",
    "materialize": "to object store",
}
"""How each engine run hands its features over, as printed."""


def engine_line(name: str, cpus: int, run: dict, rows: int) -> str:
    """Where one engine run's time went: microseconds per row in each step.

    Task clocks (Ray Data) sum over tasks, so they are set against the run's wall time times
    its CPUs; driver clocks (Spark's stages) are wall time already.
    """
    per_row = 1e6 / rows
    steps = run["steps"]
    parts = ", ".join(f"{step} {seconds * per_row:.3f}" for step, seconds in steps.items())
    line = f"    {name}, {cpus} CPU: {run['seconds']:.2f} s; us/row: {parts}"
    if run["clock"] == "driver":
        return f"{line} (stage wall times from the driver)"
    held = run["seconds"] * cpus  # CPU-seconds the run held
    rest = max(held - sum(steps.values()), 0)
    return (
        f"{line}; wall x CPUs {held * per_row:.3f} (rest {rest * per_row:.3f}: scheduling, "
        "hand-over, idle)"
    )


def main() -> None:
    """Run the benchmark and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2000, help="bars per symbol")
    parser.add_argument("--pta-symbols", type=int, default=20)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument(
        "--no-engines", action="store_true", help="skip the Ray Data and Spark engines"
    )
    parser.add_argument(
        "--spark-heap", default="auto", help="heap per executor, e.g. 6GB (auto: by rows)"
    )
    args = parser.parse_args()
    spec = SyntheticSpec(n_symbols=args.symbols, n_bars=args.bars, interval="15m")
    table = pa.Table.from_pandas(generate_bars(spec), preserve_index=False)
    rows = table.num_rows
    print(
        f"features of the default spec ({len(SPEC.columns)} columns), {args.symbols} symbols "
        f"x {args.bars} bars = {rows:,} rows"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bars.parquet"
        pq.write_table(table, path, row_group_size=100_000)
        results = bench_talib_and_kernels(table)
        results |= {
            "pandas-ta-classic (baseline, 1 process)": bench_pandas_ta(table, args.pta_symbols),
        }
        incremental, incremental_split = bench_incremental(table)
        results |= incremental
        engines: dict[tuple[str, int], dict] = {}
        for cpus in (1, 2) if not args.no_engines else ():
            engines["ray data engine", cpus] = bench_engine("ray", cpus, path)
        if not args.no_spark and not args.no_engines:
            for cpus in (1, 2):
                engines["spark engine", cpus] = bench_engine("spark", cpus, path, args.spark_heap)
        for (name, cpus), runs in engines.items():
            for mode, run in runs.items():
                results[f"{name}, {cpus} CPU, {ENGINE_MODES[mode]}"] = run["rate"]
    talib = results["talib (baseline, 1 process)"]
    for name, rate in results.items():
        print(f"  {name:50s} {rate / 1e6:8.3f} M rows/s   {rate / talib:6.2f} x talib")
    kernels = results["kernels (1 process, no Ray)"]
    print(f"  kernels / talib, full spec, one process: {kernels / talib:.2f}x")
    for name in (
        "incremental (bar updates/s, 1 core)",
        "incremental, checkpoint once a second",
        "incremental, checkpoint every micro-batch",
    ):
        # against the faster of the two kernel figures of this run (the conservative ratio)
        beside = max(kernels, results["batch kernels, taking turns with incremental"])
        print(f"  {name} / kernels, per bar: {results[name] / beside:.2f}x")
    split = ", ".join(f"{name} {ns:.0f}" for name, ns in incremental_split.items())
    print(f"  incremental, checkpoint every micro-batch, ns per bar: {split}")
    if engines:
        print("  where the engines' time went (step seconds summed over tasks, per row):")
    for (name, cpus), runs in engines.items():
        for mode, run in runs.items():
            print(engine_line(f"{name} {ENGINE_MODES[mode]}", cpus, run, rows))
    for name, mode in (("ray data engine", "parquet"), ("ray data engine", "materialize")):
        one, two = engines.get((name, 1), {}).get(mode), engines.get((name, 2), {}).get(mode)
        if one and two:
            speedup = two["rate"] / one["rate"]
            print(f"  {name} {ENGINE_MODES[mode]}, speed-up 2 CPUs / 1 CPU: {speedup:.2f}x")
            print(
                f"  {name} {ENGINE_MODES[mode]}, per core / talib: "
                f"{one['rate'] / talib:.2f}x (1 CPU), {two['rate'] / 2 / talib:.2f}x (2 CPUs)"
            )


if __name__ == "__main__":
    main()
