"""`ray-apps sweep` against the real Ray, MLflow and S3 servers: runs, checkpoints, registry,
kill-and-resume, and the same sweep as a Ray job."""

import os
import re
import signal
import subprocess
import time

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_apps._private.ray_cluster import connect_ray
from ray_apps.features.spec import load_spec
from ray_apps.models.pyfunc import ScorePyfunc
from ray_apps.stores.objects import object_store_client
from ray_apps.stores.offline_actor import offline_store
from ray_apps.training.dataset import DataConfig, load_training_data
from ray_apps.training.registry import fit_final, held_out_rows
from ray_apps.training.splits import SplitConfig, walk_forward

from .conftest import BIN
from .scripted_model import NAME as SCRIPTED

SYMBOLS = [
    "XOM",
    "JPM",
    "GE",
    "IBM",
    "KO",
    "PFE",
    "WMT",
    "CVX",
    "AAPL",
    "MSFT",
    "INTC",
    "CSCO",
    "T",
    "VZ",
    "MRK",
    "JNJ",
    "PG",
    "HD",
    "BA",
    "CAT",
]
EPOCHS = 40
DATA = {"bars": {"symbols": SYMBOLS}, "horizon": 1}
SPLIT = {"folds": 2}


def write_spec(path, name, model, params, space, **extra) -> str:
    spec = {
        "name": name,
        "experiment": "it-sweeps",
        "model": {"name": model, "params": params},
        "search_space": space,
        "data": DATA,
        "split": SPLIT,
        "registry": {"name": name},
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def store(stack):
    """The panel's bars of SYMBOLS in the stack's store (features are computed by the first
    sweep), and this process connected to the stack's Ray to read them as a sweep does."""
    stack.ok("ingest", "--source", "sp500-panel", "--symbols", *SYMBOLS)
    connect_ray(stack.settings)
    yield offline_store(stack.settings)
    ray.shutdown()


def runs_of(client: MlflowClient, sweep_prefix: str) -> tuple[object, list]:
    """The newest parent run whose sweep name starts with the prefix, and its children."""
    experiment = client.get_experiment_by_name("it-sweeps")
    if experiment is None:
        return None, []
    parents = client.search_runs(
        [experiment.experiment_id],
        f"tags.`ray_apps.role` = 'sweep' and tags.`ray_apps.sweep_run` LIKE '{sweep_prefix}-%'",
        order_by=["attributes.start_time DESC"],
    )
    if not parents:
        return None, []
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    return parents[0], children


def trials(children: list) -> list:
    return [run for run in children if run.data.tags.get("ray_apps.role") == "trial"]


def test_sweep_killed_then_resumed_registers_a_model_that_reloads_identically(
    stack, store, tmp_path
):
    spec = write_spec(
        tmp_path / "mlp.yaml",
        "it-mlp",
        "mlp",
        {"epochs": EPOCHS, "batch_size": 256},
        {"learning_rate": {"loguniform": [1e-3, 1e-2]}, "hidden": {"choice": [8, 16]}},
        num_samples=2,
        max_concurrent=1,
        scheduler={"type": "fifo"},
    )
    client = MlflowClient(stack.settings.mlflow.uri)
    driver = subprocess.Popen(
        [str(BIN / "ray-apps"), "sweep", spec],
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_with: list = []
    while driver.poll() is None:
        _, children = runs_of(client, "it-mlp")
        done = [r for r in trials(children) if r.info.status == "FINISHED"]
        going = [
            r
            for r in trials(children)
            if r.info.status == "RUNNING" and "val_rank_ic" in r.data.metrics
        ]
        if done and going:
            driver.send_signal(signal.SIGKILL)
            killed_with = done
            cut = going[0]
            break
        time.sleep(0.2)
    driver.wait()
    assert killed_with, "the sweep ended before one trial finished and another was mid-way"
    parent, children = runs_of(client, "it-mlp")
    assert parent.info.status == "RUNNING"  # its driver died
    finished_id = killed_with[0].info.run_id
    s3 = object_store_client(stack.settings)
    sweep_run = parent.data.tags["ray_apps.sweep_run"]
    time.sleep(5)  # the cut trial's worker dies with its driver; let any last upload land

    def checkpoints_of(trial_id: str) -> set[int]:
        keys = [
            o.object_name
            for o in s3.list_objects(
                stack.settings.s3.data_bucket, prefix=f"tune/{sweep_run}/", recursive=True
            )
        ]
        return {
            int(re.search(r"checkpoint_(\d+)/models.pkl$", k).group(1))
            for k in keys
            if trial_id in k and k.endswith("models.pkl")
        }

    cut_id = cut.data.tags["ray_apps.trial_id"]
    saved_at_kill = len(checkpoints_of(cut_id))  # checkpoint_k holds epoch k + 1
    assert 1 <= saved_at_kill < EPOCHS, saved_at_kill

    out = stack.ok("sweep", spec, "--resume")
    assert f"sweep {parent.data.tags['ray_apps.sweep_run']}: 2 trials" in out
    registered = re.search(r"registered it-mlp version (\d+) as @challenger", out)
    assert registered, out

    # One parent, two trials and a final run under it, every one finished.
    resumed_parent, children = runs_of(client, "it-mlp")
    assert resumed_parent.info.run_id == parent.info.run_id
    assert resumed_parent.info.status == "FINISHED"
    roles = sorted(r.data.tags["ray_apps.role"] for r in children)
    assert roles == ["final", "trial", "trial"]
    assert {r.info.status for r in children} == {"FINISHED"}
    # The trial that had finished was not trained again: each epoch logged once.
    history = client.get_metric_history(finished_id, "val_rank_ic")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    # The cut trial went on from its newest checkpoint: every epoch it had saved was logged
    # once; only epochs after it (trained but not saved when the driver died) ran twice, and
    # gave the same value again (the resumed training is exact).
    history = client.get_metric_history(cut.info.run_id, "val_rank_ic")
    steps = sorted(m.step for m in history)
    assert sorted(set(steps)) == list(range(1, EPOCHS + 1))
    assert [m for m in steps if steps.count(m) > 1 and m <= saved_at_kill] == []
    for step in {m for m in steps if steps.count(m) > 1}:
        assert len({m.value for m in history if m.step == step}) == 1
    for run in trials(children):
        assert {"learning_rate", "hidden", "epochs"} <= set(run.data.params)
        assert run.data.tags["epochs_trained"] == str(EPOCHS)

    # Checkpoints of every epoch and the model artifacts are on the S3 server.
    assert len(checkpoints_of(killed_with[0].data.tags["ray_apps.trial_id"])) == EPOCHS
    final = next(r for r in children if r.data.tags["ray_apps.role"] == "final")
    version = client.get_model_version_by_alias("it-mlp", "challenger")
    model_id = version.source.removeprefix("models:/")  # the logged model, m-...
    artifacts = {
        o.object_name.rpartition(f"{model_id}/artifacts/")[2]
        for o in s3.list_objects(
            stack.settings.s3.artifacts_bucket, prefix="artifacts/", recursive=True
        )
        if model_id in o.object_name
    }
    assert {"MLmodel", "python_model.pkl", "input_example.json"} <= artifacts

    # The alias points at the new version, whose run holds the test metrics and the tags.
    assert version.version == registered.group(1)
    assert version.run_id == final.info.run_id
    assert version.tags["feature_spec.version"] and version.tags["data.start"]
    assert {"test_ic", "test_rank_ic", "test_icir", "test_sharpe", "test_max_drawdown"} <= set(
        final.data.metrics
    )
    listed = [
        line
        for line in stack.ok("models", "list", "--name", "it-mlp").splitlines()
        if "@challenger" in line
    ]
    assert len(listed) == 1 and listed[0].split()[:2] == ["it-mlp", registered.group(1)]

    # Loaded from the registry, the model scores exactly as the same parameters trained here.
    data = load_training_data(DataConfig(**DATA), store, echo=lambda _: None)
    walk = walk_forward(len(data.panel.dates), 1, SplitConfig(**SPLIT))
    params = {k: v for k, v in final.data.params.items() if k != "model"}
    here = ScorePyfunc(fit_final("mlp", params, data, walk), "rank", 5)
    rows = held_out_rows(data, walk, 1)
    os.environ["MLFLOW_TRACKING_URI"] = stack.settings.mlflow.uri
    loaded = mlflow.pyfunc.load_model("models:/it-mlp@challenger").predict(rows)
    expected = here.score(rows)
    assert expected["score"].notna().sum() > 100
    np.testing.assert_array_equal(loaded["score"].to_numpy(), expected["score"].to_numpy())
    assert (loaded["symbol"] == expected["symbol"]).all()
    assert (pd.to_datetime(loaded["ts"]) == pd.to_datetime(expected["ts"])).all()
    with pytest.raises(MlflowException, match="logret_1"):  # the signature names what is missing
        mlflow.pyfunc.load_model("models:/it-mlp@challenger").predict(rows.drop(columns="logret_1"))


def test_streamed_sweep_as_a_ray_job_with_optuna_and_asha(stack, tmp_path):
    spec = write_spec(
        tmp_path / "stream.yaml",
        "it-stream",
        "mlp",
        {"epochs": 4, "batch_size": 128},
        {"learning_rate": {"loguniform": [1e-3, 1e-2]}},
        num_samples=3,
        search={"algorithm": "optuna", "seed": 1},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        data={**DATA, "stream_rows": True},
    )
    done = stack.run(
        str(BIN / "ray"),
        "job",
        "submit",
        "--",
        "python",
        "-m",
        "ray_apps.jobs.sweep",
        spec,
        env=stack.job_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "registered it-stream version 1 as @challenger" in done.stdout
    client = MlflowClient(stack.settings.mlflow.uri)
    parent, children = runs_of(client, "it-stream")
    assert parent.info.status == "FINISHED"
    runs = trials(children)
    assert len(runs) == 3
    for run in runs:  # ASHA may stop a trial after any rung (1, 2); who stops depends on order
        epochs = int(run.data.tags["epochs_trained"])
        assert 1 <= epochs <= 4
        assert run.data.tags["stopped_early"] == str(epochs < 4)
        history = client.get_metric_history(run.info.run_id, "val_rank_ic")
        assert [m.step for m in history] == list(range(1, epochs + 1))
    assert float(parent.data.metrics["best_val_rank_ic"]) == max(
        r.data.metrics["val_rank_ic"]
        for r in runs  # each trial's last report
    )


def test_a_spec_error_fails_before_any_trial(stack, tmp_path):
    spec = write_spec(
        tmp_path / "bad.yaml",
        "it-bad",
        "mlp",
        {},
        {"dropout": {"uniform": [0.0, 1.5]}},
    )
    done = stack.cli("sweep", spec)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ray-apps: {spec}: search_space.dropout=1.5 -> model.params")
    parent, _ = runs_of(MlflowClient(stack.settings.mlflow.uri), "it-bad")
    assert parent is None


def asha_outcome(
    qualities: list[float],
    metric: dict[float, float],
    rungs: list[int],
    max_t: int,
    reduction_factor: float,
) -> list[int]:
    """Epochs each trial runs under asynchronous successive halving, trials run one at a time.

    At each rung a trial stops when its metric is below the (1 - 1/rf) quantile of the metrics
    earlier trials had at that rung (Li et al., "A System for Massively Parallel Hyperparameter
    Tuning", as Tune's ASHA implements it); it always stops at ``max_t``.
    """
    recorded: dict[int, list[float]] = {rung: [] for rung in rungs}
    epochs = []
    for quality in qualities:
        value, ran = metric[quality], max_t
        for rung in rungs:
            earlier = recorded[rung]
            cutoff = np.percentile(earlier, (1 - 1 / reduction_factor) * 100) if earlier else None
            stop = cutoff is not None and value < cutoff
            earlier.append(value)
            if stop:
                ran = rung
                break
        epochs.append(ran)
    return epochs


def test_asha_stops_exactly_the_trials_its_rule_says(stack, tmp_path):
    """Scripted trials whose validation rank IC is fixed by ``quality``, run one at a time."""
    spec = write_spec(
        tmp_path / "asha.yaml",
        "it-asha",
        SCRIPTED,
        {"epochs": 4},
        {"quality": {"choice": [0.0, 0.3, 0.6, 0.9]}},
        num_samples=6,
        max_concurrent=1,
        search={"algorithm": "random", "seed": 3},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    stack.ok("sweep", spec)
    client = MlflowClient(stack.settings.mlflow.uri)
    _, children = runs_of(client, "it-asha")
    runs = sorted(trials(children), key=lambda r: r.info.start_time)
    assert len(runs) == 6
    qualities = [float(r.data.params["quality"]) for r in runs]
    metric = {}
    for run, quality in zip(runs, qualities, strict=True):
        history = client.get_metric_history(run.info.run_id, "val_rank_ic")
        assert len({m.value for m in history}) == 1  # the same every epoch, as scripted
        metric.setdefault(quality, history[0].value)
        assert metric[quality] == history[0].value
    assert sorted(metric) == sorted(metric, key=metric.get)  # higher quality, higher rank IC
    expected = asha_outcome(qualities, metric, rungs=[1, 2], max_t=4, reduction_factor=2)
    assert 1 in expected and 4 in expected, (qualities, expected)  # the seed makes both happen
    assert [int(r.data.tags["epochs_trained"]) for r in runs] == expected
    assert [r.data.tags["stopped_early"] for r in runs] == [str(e < 4) for e in expected]
    for run, epochs in zip(runs, expected, strict=True):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_rank_ic")]
        assert sorted(steps) == list(range(1, epochs + 1))


def test_a_failed_trial_retries_from_its_checkpoint_and_a_finished_resume_adds_nothing(
    stack, tmp_path
):
    flag, log = tmp_path / "failed.flag", tmp_path / "epochs.log"
    spec = write_spec(
        tmp_path / "retry.yaml",
        "it-retry",
        SCRIPTED,
        {
            "epochs": 4,
            "quality": 0.5,
            "fail_at_epoch": 3,
            "flag_file": str(flag),
            "epoch_log": str(log),
        },
        {},
        num_samples=1,
        max_failures=1,
        scheduler={"type": "fifo"},
    )
    out = stack.ok("sweep", spec)
    assert flag.read_text() == "failed at epoch 3\n"  # the trial did fail once
    # One model per fold (2 folds) in lockstep: epochs 1-2 were trained once each, then the
    # retry went on from the epoch-2 checkpoint; the final fit (on all dates before the test
    # period) trains its own 4 epochs after that.
    trial_epochs = (1, 1, 2, 2, 3, 3, 4, 4)
    assert log.read_text().splitlines() == [f"0.5 {e}" for e in (*trial_epochs, 1, 2, 3, 4)]
    client = MlflowClient(stack.settings.mlflow.uri)
    _, children = runs_of(client, "it-retry")
    (trial,) = trials(children)
    steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_rank_ic")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert trial.data.tags["epochs_trained"] == "4" and trial.info.status == "FINISHED"
    assert re.search(r"registered it-retry version 1 as @challenger", out), out

    again = stack.ok("sweep", spec, "--resume")
    assert "had already finished" in again and "version 1" in again, again
    assert "no new version registered" in again
    assert [v.version for v in client.search_model_versions("name = 'it-retry'")] == ["1"]
    assert log.read_text().count("\n") == 12  # nothing trained again


def test_a_sweep_trains_on_stored_features_computes_missing_ones_and_fails_on_a_leak(
    stack, store, tmp_path
):
    features_spec = tmp_path / "features.yaml"  # a version no other test stored
    features_spec.write_text(
        "version: it-store\nfeatures:\n  - {name: logret, k: 1}\n  - {name: rsi, n: 14}\n"
        "  - {name: sma, n: 20}\n"
    )
    spec = write_spec(
        tmp_path / "ridge.yaml",
        "it-store",
        "ridge",
        {},
        {"alpha": {"choice": [1.0]}},
        num_samples=1,
        data={**DATA, "feature_spec": str(features_spec)},
    )
    first = stack.ok("sweep", spec)
    assert "missing or stale for 20 of 20 symbols: computing them with the ray engine" in first
    stored = ray.get(store.features.remote(SYMBOLS, interval="1d", spec_version="it-store"))
    bars = ray.get(store.bars.remote(SYMBOLS, interval="1d"))
    assert stored.num_rows == bars.num_rows  # every bar's features, stored by the Ray engine
    assert set(stored["fingerprint"].to_pylist()) == {load_spec(features_spec).fingerprint}

    again = stack.ok("sweep", spec)
    assert "features of spec it-store (20 symbols) read from the store" in again
    assert "computing" not in again

    # A stored feature that used the next bar (rsi of t+1 at t) fails the sweep before a trial.
    leaked = stored.filter(pc.field("symbol") == "AAPL").to_pandas()
    leaked["rsi_14"] = leaked["rsi_14"].shift(-1)
    columns = ["symbol", "ts", "logret_1", "rsi_14", "sma_20"]
    ray.get(
        store.insert_features.remote(
            pa.Table.from_pandas(leaked[columns], preserve_index=False),
            "1d",
            "it-store",
            load_spec(features_spec).fingerprint,
        )
    )
    done = stack.cli("sweep", spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "look-ahead: feature(s) ['rsi_14']" in done.stderr
    assert "Traceback" not in done.stderr
