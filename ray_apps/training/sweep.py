"""Run a sweep spec: Ray Tune over the walk-forward folds, MLflow runs, the best model registered.

``run_sweep`` loads the data once (features from the one definition, the point-in-time panel),
splits it, starts a Tune experiment whose trials report fold-averaged validation metrics every
epoch (ASHA stops the weak ones), keeps checkpoints on the S3 server, and then trains the best
trial's parameters on every date before the test period, scores the test period once and
registers that model. ``resume=True`` continues the newest run of the spec where its driver
stopped: finished trials are kept, unfinished and failed ones go on from their last checkpoint.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs
import ray
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from ray_apps._private.ray_cluster import connect_ray, require_task_cpus
from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.models.catalog import model_class
from ray_apps.models.pyfunc import ScorePyfunc
from ray_apps.stores.objects import s3_filesystem
from ray_apps.stores.offline_actor import offline_store
from ray_apps.training.dataset import TrainingData, load_training_data
from ray_apps.training.registry import (
    Registered,
    fit_final,
    held_out_metrics,
    held_out_rows,
    log_final,
    register,
)
from ray_apps.training.splits import WalkForward, walk_forward
from ray_apps.training.streaming import panel_rows
from ray_apps.training.sweep_spec import SweepSpec, check_against_panel
from ray_apps.training.tracking import (
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    TrialRunCloser,
    ensure_experiment,
    find_or_create_run,
    find_run,
    log_metrics,
    log_params,
    set_tags,
)
from ray_apps.training.trial import TrialSetup, train_trial

Echo = Callable[[str], None]
TUNE_PREFIX = "tune"
"""Folder of the data bucket holding Tune experiments (one per sweep run)."""


def tune_storage(settings: Settings) -> tuple[str, pyarrow.fs.S3FileSystem]:
    """(storage path ``BUCKET/tune``, the S3 filesystem) for Tune's experiment state."""
    return f"{settings.s3.data_bucket}/{TUNE_PREFIX}", s3_filesystem(settings)


def latest_run(spec: SweepSpec, settings: Settings) -> str | None:
    """The newest stored run name of the spec (``NAME-YYYYmmdd-HHMMSS``), or None."""
    root, filesystem = tune_storage(settings)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError as error:
        raise UserError(f"s3://{root}: cannot list sweep runs ({error})") from None
    names = sorted(
        entry.base_name
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory
        and entry.base_name.startswith(f"{spec.name}-")
        and entry.base_name.removeprefix(f"{spec.name}-").replace("-", "").isdigit()
    )
    return names[-1] if names else None


def max_epochs(spec: SweepSpec) -> int:
    """The most epochs a trial can run (the searched maximum when epochs are searched)."""
    searched = spec.search_space.get("epochs")
    if searched is not None:
        return max(int(value) for value in searched.bounds())
    params = model_class(spec.model.name).Params(**spec.model.params)
    return int(getattr(params, "epochs", 1))


def gpus_per_trial(spec: SweepSpec) -> float:
    """The GPUs a trial asks for: ``auto`` takes one when the cluster has any.

    Raises:
        UserError: GPUs are asked for but the cluster has none.
    """
    available = ray.cluster_resources().get("GPU", 0.0)
    wanted = spec.resources.gpu
    if wanted == "auto":
        return 1.0 if available >= 1 else 0.0
    if wanted > available:
        raise UserError(
            f"resources.gpu: {wanted} GPU(s) per trial asked, the cluster has {available:g}"
        )
    return float(wanted)


def scheduler(spec: SweepSpec, epochs: int) -> TrialScheduler:
    """ASHA over epochs, or FIFO."""
    if spec.scheduler.type == "fifo" or epochs <= 1:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=epochs,
        grace_period=min(spec.scheduler.grace_period, epochs),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def searcher(spec: SweepSpec) -> Searcher | BasicVariantGenerator:
    """Random sampling (seeded) or Optuna's TPE, at most ``max_concurrent`` trials at once."""
    if spec.search.algorithm == "optuna":
        optuna = OptunaSearch(seed=spec.search.seed)
        if spec.max_concurrent is None:
            return optuna
        return ConcurrencyLimiter(optuna, max_concurrent=spec.max_concurrent)
    return BasicVariantGenerator(
        random_state=spec.search.seed, max_concurrent=spec.max_concurrent or 0
    )


@dataclass
class TrialRow:
    """One trial of the finished sweep."""

    trial_id: str
    status: str
    epochs: int
    params: dict[str, Any]
    metric: float


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes:
        run_name: the Tune experiment folder and MLflow parent run name.
        storage: where Tune's state and checkpoints are.
        parent_run_id: the MLflow parent run.
        metric: the optimized validation metric.
        trials: every trial.
        best: the best trial.
        test: the final model's test-period metrics.
        registered: the registered version.
        seconds: wall time of the whole sweep.
        tune_seconds: wall time of the trials (Tune's part of it).
        mlflow_url: the parent run's page.
        already_finished: a ``--resume`` found the sweep done: nothing ran, nothing was
            registered; ``registered`` is the version it had registered.
    """

    run_name: str
    storage: str
    parent_run_id: str
    metric: str
    trials: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    test: dict[str, float] = field(default_factory=dict)
    registered: Registered | None = None
    seconds: float = 0.0
    tune_seconds: float = 0.0
    mlflow_url: str = ""
    already_finished: bool = False

    def render(self) -> str:
        """A summary for the terminal."""
        lines = [
            f"sweep {self.run_name}: {len(self.trials)} trials in {self.tune_seconds:.0f} s "
            f"({self.seconds:.0f} s with data, final fit and registry)"
        ]
        for row in sorted(self.trials, key=lambda r: -_sortable(r.metric)):
            params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(row.params.items()))
            lines.append(
                f"  {row.trial_id:<14} {row.status:<11} epochs {row.epochs:>3}  "
                f"{self.metric} {row.metric:+.4f}  {params}"
            )
        if self.best is not None:
            lines.append(f"best trial {self.best.trial_id}: {self.metric} {self.best.metric:+.4f}")
        if self.test:
            shown = ("test_ic", "test_rank_ic", "test_icir", "test_sharpe", "test_max_drawdown")
            lines.append("test period: " + ", ".join(f"{k[5:]} {self.test[k]:+.4f}" for k in shown))
        if self.registered is not None and self.already_finished:
            r = self.registered
            lines.append(
                f"already finished: registered {r.name} version {r.version} (run {r.run_id}) "
                "is the sweep's model; no new version registered"
            )
        elif self.registered is not None:
            r = self.registered
            lines.append(
                f"registered {r.name} version {r.version} as @{r.alias} ({r.uri}); reloaded "
                f"and checked on {r.checked_rows:,} scores"
            )
        lines.append(f"MLflow: {self.mlflow_url}")
        lines.append(f"checkpoints: s3://{self.storage}")
        return "\n".join(lines)


def _sortable(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _sweep_result(
    spec: SweepSpec,
    settings: Settings,
    run_name: str,
    experiment_id: str,
    parent_id: str,
    **fields: Any,
) -> SweepResult:
    """The result of one sweep run: where its checkpoints and MLflow runs are, plus ``fields``."""
    root, _ = tune_storage(settings)
    return SweepResult(
        run_name=run_name,
        storage=f"{root}/{run_name}",
        parent_run_id=parent_id,
        metric=spec.metric,
        mlflow_url=f"{settings.mlflow.uri}/#/experiments/{experiment_id}/runs/{parent_id}",
        **fields,
    )


def run_sweep(
    spec: SweepSpec, settings: Settings, resume: bool = False, echo: Echo = print
) -> SweepResult:
    """Runs (or resumes) a sweep and registers its best model.

    Raises:
        UserError: nothing to resume, no trial finished, or a service is unreachable.
    """
    started = time.monotonic()
    root, filesystem = tune_storage(settings)
    if resume:
        run_name = latest_run(spec, settings)
        if run_name is None:
            raise UserError(f"--resume: no run of sweep {spec.name!r} under s3://{root}")
    else:
        run_name = f"{spec.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    connect_ray(settings)
    gpus = gpus_per_trial(spec)
    require_task_cpus(spec.resources.cpu, f"sweep {spec.name} (resources.cpu per trial)")
    client = MlflowClient(settings.mlflow.uri)
    experiment_id = ensure_experiment(client, spec.experiment)
    if resume:
        done = finished_sweep(client, experiment_id, spec, run_name, settings)
        if done is not None:
            echo(f"sweep {run_name} had already finished: nothing to resume, no new version")
            done.seconds = time.monotonic() - started
            return done
    source = spec.data.bars_input()
    echo(
        f"sweep {run_name}: loading {source.label}"
        f"{f' ({spec.data.universe} universe)' if spec.data.universe else ''}, "
        f"horizon {spec.data.horizon}"
    )
    data = load_training_data(spec.data, offline_store(settings), echo)
    panel = data.panel
    check_against_panel(spec, panel)
    walk = walk_forward(len(panel.dates), spec.data.horizon, spec.split)
    echo(
        f"  {len(panel.dates)} dates x {len(panel.symbols)} symbols x "
        f"{len(panel.feature_columns)} features; {len(walk.folds)} fold(s), "
        f"test period {panel.dates[walk.test[0]]:%Y-%m-%d}..{panel.dates[walk.test[-1]]:%Y-%m-%d}"
        f" held out"
    )
    parent_id, _ = find_or_create_run(
        client,
        experiment_id,
        run_name,
        {SWEEP_TAG: run_name, ROLE_TAG: "sweep"},
        {**data.tags, "model": spec.model.name},
    )
    if not resume:
        log_params(
            client,
            parent_id,
            {
                "model": spec.model.name,
                "num_samples": spec.num_samples,
                "metric": spec.metric,
                **spec.model.params,
            },
        )
        client.log_dict(parent_id, spec.model_dump(mode="json"), "sweep_spec.json")
    epochs = max_epochs(spec)
    setup = TrialSetup(
        model=spec.model.name,
        fixed_params=spec.model.params,
        folds=walk.folds,
        portfolio=spec.portfolio,
        tracking_uri=settings.mlflow.uri,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        storage=f"{root}/{run_name}",
        filesystem=filesystem,
        device=None if gpus else "cpu",
        streams=[panel_rows(panel, f.train) for f in walk.folds] if spec.data.stream_rows else None,
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, setup=setup),
        {"cpu": spec.resources.cpu, "gpu": gpus},
    )
    if resume:
        echo(f"  resuming s3://{root}/{run_name}")
    closer = TrialRunCloser(settings.mlflow.uri, experiment_id, parent_id, epochs)
    tuner = _tuner(spec, trainable, f"{root}/{run_name}", filesystem, closer, epochs, resume)
    tune_started = time.monotonic()
    results = tuner.fit()
    tune_seconds = time.monotonic() - tune_started
    result = _sweep_result(
        spec, settings, run_name, experiment_id, parent_id, tune_seconds=tune_seconds
    )
    result.trials = _trial_rows(results, spec.metric)
    finished = [row for row in result.trials if row.status != "ERROR"]
    if not finished:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FAILED))
        errors = [str(t.error).splitlines()[0] for t in results if t.error]
        raise UserError(f"sweep {run_name}: every trial failed; first error: {errors[0]}")
    result.best = max(
        finished, key=lambda r: _sortable(r.metric if spec.metric_mode == "max" else -r.metric)
    )
    echo(
        f"best trial {result.best.trial_id} ({spec.metric} {result.best.metric:+.4f}); training "
        f"it on every date before the test period for {result.best.epochs} epoch(s)"
    )
    params = setup.params(result.best.params)
    if "epochs" in model_class(spec.model.name).Params.model_fields:
        params["epochs"] = max(result.best.epochs, 1)
    final = ray.get(
        ray.remote(fit_final)
        .options(num_cpus=spec.resources.cpu, num_gpus=gpus)
        .remote(spec.model.name, params, data, walk, spec.data.stream_rows)
    )
    result.test = held_out_metrics(final, data, walk, spec.portfolio)
    result.registered = _register(
        client, experiment_id, parent_id, spec, data, walk, final, params, result
    )
    log_metrics(client, parent_id, {**result.test, f"best_{spec.metric}": result.best.metric})
    set_tags(
        client,
        parent_id,
        {"best_trial": result.best.trial_id, "registered_version": result.registered.version},
    )
    client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FINISHED))
    result.seconds = time.monotonic() - started
    return result


def finished_sweep(
    client: MlflowClient,
    experiment_id: str,
    spec: SweepSpec,
    run_name: str,
    settings: Settings,
) -> SweepResult | None:
    """What a finished sweep run did, read back from MLflow, or None when it is not finished.

    Finished means its ``final`` run ended and its model version is in the registry: then
    every trial had ended too (the final fit starts after Tune returns).
    """
    parent_id = find_run(client, experiment_id, {SWEEP_TAG: run_name, ROLE_TAG: "sweep"})
    if parent_id is None:
        return None
    final_id = find_run(client, experiment_id, {PARENT_TAG: parent_id, ROLE_TAG: "final"})
    if final_id is None:
        return None
    final = client.get_run(final_id)
    versions = client.search_model_versions(
        f"name = '{spec.registry.name}' and run_id = '{final_id}'"
    )
    if final.info.status != RunStatus.to_string(RunStatus.FINISHED) or not versions:
        return None
    version = str(max(int(v.version) for v in versions))
    result = _sweep_result(
        spec,
        settings,
        run_name,
        experiment_id,
        parent_id,
        test={k: v for k, v in final.data.metrics.items() if k.startswith("test_")},
        registered=Registered(
            spec.registry.name,
            version,
            spec.registry.alias,
            final_id,
            f"models:/{spec.registry.name}/{version}",
            0,
        ),
        already_finished=True,
    )
    children = client.search_runs(
        [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{ROLE_TAG}` = 'trial'"
    )
    for run in children:
        result.trials.append(
            TrialRow(
                trial_id=run.data.tags.get(TRIAL_TAG, "?"),
                status="TERMINATED" if run.info.status == "FINISHED" else run.info.status,
                epochs=int(run.data.tags.get("epochs_trained", 0)),
                params={k: v for k, v in run.data.params.items() if k in spec.search_space},
                metric=float(run.data.metrics.get(spec.metric, math.nan)),
            )
        )
    best = final.data.tags.get("best_trial")
    result.best = next((row for row in result.trials if row.trial_id == best), None)
    return result


def _tuner(
    spec: SweepSpec,
    trainable: Any,
    path: str,
    filesystem: pyarrow.fs.FileSystem,
    closer: TrialRunCloser,
    epochs: int,
    resume: bool,
) -> tune.Tuner:
    """A new Tune experiment at ``path`` (``BUCKET/tune/RUN``), or the stored one restored."""
    if resume:
        return tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    root, _, run_name = path.rpartition("/")
    return tune.Tuner(
        trainable,
        param_space={k: d.to_tune() for k, d in spec.search_space.items()},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.metric_mode,
            scheduler=scheduler(spec, epochs),
            search_alg=searcher(spec),
            num_samples=spec.num_samples,
            reuse_actors=True,  # a new trial skips starting a worker (torch, mlflow imports)
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=root,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Every epoch's checkpoint is kept: the experiment state written to S3 may lag the
            # newest checkpoint, and a resume must find the one it names.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[closer],
            verbose=1,
        ),
    )


def _trial_rows(results: tune.ResultGrid, metric: str) -> list[TrialRow]:
    rows = []
    for trial in results:
        metrics = trial.metrics or {}
        rows.append(
            TrialRow(
                trial_id=metrics.get("trial_id", "?"),
                status="ERROR" if trial.error else "TERMINATED",
                epochs=int(metrics.get("epoch", 0)),
                params=dict(trial.config or {}),
                metric=float(metrics.get(metric, math.nan)),
            )
        )
    return rows


def _register(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    spec: SweepSpec,
    data: TrainingData,
    walk: WalkForward,
    final: Any,
    params: dict[str, Any],
    result: SweepResult,
) -> Registered:
    run_id, _ = find_or_create_run(
        client,
        experiment_id,
        f"{result.run_name}-final",
        {PARENT_TAG: parent_id, ROLE_TAG: "final"},
    )
    tags = {
        **data.tags,
        "model": spec.model.name,
        "sweep": result.run_name,
        "best_trial": result.best.trial_id,
    }
    log_final(
        client,
        run_id,
        {"model": spec.model.name, **params},
        {**result.test, spec.metric: result.best.metric},
        tags,
    )
    wrapper = ScorePyfunc(final, spec.data.normalize, spec.data.min_symbols)
    registered = register(
        client,
        run_id,
        wrapper,
        held_out_rows(data, walk, final.lookback),
        spec.registry.name,
        spec.registry.alias,
        tags,
    )
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return registered
