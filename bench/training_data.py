"""Where a sweep's data comes from: stored features against the old in-driver path.

Three ways to the same training panel (the spec's data section, ``tune/ridge.yaml`` by default,
the S&P 500 panel at horizon 1), timed in one run on the running stack:

1. **baseline**: what a sweep did before it read the store: load the packaged CSV, validate it
   and run the feature kernels in the driver, then build the panel;
2. **store, features missing**: the spec's feature version is deleted first, so the sweep's
   loader computes them with the Ray Data engine into the ``features`` table, then reads them;
3. **store, features stored**: the loader reads the stored features (the usual case).

Both store paths include the look-ahead check. The panels are compared: the same dates, symbols
and feature values (to 1e-9). Then the whole ridge sweep is timed reading the store. Needs the
stack, with ``sp500-panel`` ingested: ``ray-apps stack up && ray-apps ingest --source
sp500-panel``.

    python bench/training_data.py [--spec tune/ridge.yaml]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ray

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
from ray_apps.features.batch import compute_frame
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.validation import validate_bars
from ray_apps.stores.offline_actor import offline_store
from ray_apps.training.dataset import build_training_data, load_training_data
from ray_apps.training.sweep import run_sweep
from ray_apps.training.sweep_spec import load_sweep_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="tune/ridge.yaml")
    args = parser.parse_args()
    spec = load_sweep_spec(args.spec)
    settings = load_settings()
    connect_ray(settings)
    store = offline_store(settings)
    features = load_spec(spec.data.feature_spec)
    quiet = lambda _: None  # noqa: E731

    started = time.monotonic()
    bars = validate_bars(load_sp500_panel()).accepted
    symbols = spec.data.bars_input().symbols
    if symbols:
        bars = bars[bars["symbol"].isin(symbols)].reset_index(drop=True)
    baseline = build_training_data(bars, compute_frame(bars, features), features, spec.data)
    baseline_s = time.monotonic() - started

    ray.get(store.drop_features.remote(features.version))  # forces the compute path
    started = time.monotonic()
    computed = load_training_data(spec.data, store, quiet)
    computed_s = time.monotonic() - started
    started = time.monotonic()
    stored = load_training_data(spec.data, store, quiet)
    stored_s = time.monotonic() - started

    for name, data in (("computed", computed), ("stored", stored)):
        same = (
            data.panel.dates.equals(baseline.panel.dates)
            and np.array_equal(data.panel.symbols, baseline.panel.symbols)
            and np.allclose(data.panel.features, baseline.panel.features, atol=1e-9, equal_nan=True)
        )
        print(f"{name:>9} panel equals the baseline's: {same}")
    shape = "x".join(str(n) for n in baseline.panel.shape)
    print(f"panel {shape} (dates x symbols x features) from {len(bars):,} bars")
    print(f"{'baseline: CSV + validate + kernels in the driver':<52} {baseline_s:7.2f} s")
    print(f"{'store, features missing (Ray Data computes, stores)':<52} {computed_s:7.2f} s")
    print(f"{'store, features stored':<52} {stored_s:7.2f} s")

    registry = spec.registry.model_copy(update={"name": f"bench-{spec.registry.name}"})
    bench_spec = spec.model_copy(update={"name": f"bench-{spec.name}", "registry": registry})
    result = run_sweep(bench_spec, settings, echo=quiet)
    print(
        f"whole sweep {args.spec} reading the store: {result.seconds:.1f} s "
        f"(Tune {result.tune_seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
