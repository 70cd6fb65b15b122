"""Run a sweep spec: ``python -m ray_apps.jobs.sweep tune/SPEC.yaml [--resume]``.

Runs the same as ``ray-apps sweep`` and as ``ray job submit -- python -m ray_apps.jobs.sweep
...``. The spec is checked whole before anything starts; then Ray Tune runs the trials (watch
them in the Ray dashboard and in MLflow under the spec's experiment), and the best trial's
model is evaluated once on the held-out test period and registered with the spec's alias.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.jobs import run_job
from ray_apps.training.sweep_spec import load_sweep_spec, with_horizon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's options, shared by the CLI and this job."""
    parser.add_argument("spec", type=Path, help="sweep spec, e.g. tune/mlp.yaml")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run of this spec: finished trials are kept, the others go "
        "on from their last checkpoint",
    )
    parser.add_argument("--num-samples", type=int, help="trials to run (overrides the spec)")
    parser.add_argument(
        "--horizon",
        type=int,
        help="label horizon in bars (overrides the spec; the sweep and registered model names "
        "get a -hN suffix)",
    )


def run_from_args(args: argparse.Namespace, settings: Settings) -> str:
    """Validates the spec, runs the sweep and returns its summary."""
    spec = load_sweep_spec(args.spec)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples: {args.num_samples} is not a positive count")
        spec = spec.model_copy(update={"num_samples": args.num_samples})
    if args.horizon is not None:
        spec = with_horizon(spec, args.horizon)
    # imported here: it loads torch and Ray Tune, seconds that `ray-apps --help` need not wait
    from ray_apps.training.sweep import run_sweep

    return run_sweep(spec, settings, resume=args.resume).render()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ray job submit -- python -m ray_apps.jobs.sweep ...``."""
    return run_job("ray_apps.jobs.sweep", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
