"""Tune's overhead: a 16-trial ASHA sweep on 2 CPUs beside the same trials in a plain loop.

The sweep is the platform's (``tune/mlp.yaml`` on the S&P 500 panel): trials in parallel, each
epoch reported to Tune and logged to MLflow, every epoch's models checkpointed to S3. The loop
then trains exactly the same trials (the sampled parameters, each for the epochs ASHA let it
run, with the same per-epoch validation) one after another in this process, with nothing
logged or saved. Wall times are printed side by side; the loop divided by the trials' CPUs is
the ideal parallel time. Needs the stack: ``ray-apps stack up``.

    python bench/sweep.py [--spec tune/mlp.yaml] [--samples 16]
"""

from __future__ import annotations

import argparse
import time

import ray
import torch

from ray_apps.config import load_settings
from ray_apps.models.catalog import build_model
from ray_apps.stores.offline_actor import offline_store
from ray_apps.training.dataset import load_training_data
from ray_apps.training.splits import walk_forward
from ray_apps.training.sweep import run_sweep
from ray_apps.training.sweep_spec import load_sweep_spec
from ray_apps.training.trial import validation_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="tune/mlp.yaml")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    spec = load_sweep_spec(args.spec)
    registry = spec.registry.model_copy(update={"name": f"bench-{spec.registry.name}"})
    spec = spec.model_copy(
        update={"name": f"bench-{spec.name}", "num_samples": args.samples, "registry": registry}
    )
    settings = load_settings()
    result = run_sweep(spec, settings, echo=lambda _: None)
    cpus = ray.cluster_resources().get("CPU", 0)
    concurrent = max(1, min(args.samples, int(cpus // spec.resources.cpu)))

    data = load_training_data(spec.data, offline_store(settings), echo=lambda _: None)
    walk = walk_forward(len(data.panel.dates), spec.data.horizon, spec.split)
    torch.set_num_threads(1)
    started = time.monotonic()
    epochs = 0
    for trial in result.trials:
        params = {**spec.model.params, **trial.params, "device": "cpu"}
        models = [
            build_model(spec.model.name, params, data.panel.feature_columns) for _ in walk.folds
        ]
        steps = [m.fit_steps(data.panel, f.train) for m, f in zip(models, walk.folds, strict=True)]
        for done in zip(*steps, strict=True):
            validation_metrics(models, data.panel, walk.folds, spec.portfolio)
            epochs += 1
            if done[0] >= trial.epochs:
                break
    loop = time.monotonic() - started

    ideal = loop / concurrent
    longest = max(t.epochs for t in result.trials)
    stopped = sum(t.epochs < longest for t in result.trials)
    print(
        f"spec {args.spec}: {len(result.trials)} trials, {epochs} trial-epochs (ASHA stopped "
        f"{stopped} early), {concurrent} at a time on {cpus:g} CPUs"
    )
    print(f"{'Tune sweep (MLflow + S3 checkpoints)':<44} {result.tune_seconds:8.1f} s")
    print(f"{'plain loop, same trials and epochs, 1 proc':<44} {loop:8.1f} s")
    print(f"{'ideal parallel (loop / ' + str(concurrent) + ')':<44} {ideal:8.1f} s")
    print(
        f"Tune vs loop: {result.tune_seconds / loop:.2f}x; vs ideal parallel: "
        f"{result.tune_seconds / ideal:.2f}x; per trial-epoch overhead "
        f"{(result.tune_seconds - ideal) / epochs * concurrent * 1000:.0f} ms"
    )
    print(f"whole sweep incl. data, final fit and registry: {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
