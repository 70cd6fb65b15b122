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
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_apps.models.pyfunc import ScorePyfunc
from ray_apps.stores.objects import object_store_client
from ray_apps.training.dataset import DataConfig, load_training_data
from ray_apps.training.registry import fit_final, held_out_rows
from ray_apps.training.splits import SplitConfig, walk_forward

from .conftest import BIN

SYMBOLS = ["XOM", "JPM", "GE", "IBM", "KO", "PFE", "WMT", "CVX", "AAPL", "MSFT", "INTC", "CSCO",
           "T", "VZ", "MRK", "JNJ", "PG", "HD", "BA", "CAT"]
EPOCHS = 40
DATA = {"source": "sp500-panel", "symbols": SYMBOLS, "horizon": 1}
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


def test_sweep_killed_then_resumed_registers_a_model_that_reloads_identically(stack, tmp_path):
    spec = write_spec(
        tmp_path / "mlp.yaml", "it-mlp", "mlp", {"epochs": EPOCHS, "batch_size": 256},
        {"learning_rate": {"loguniform": [1e-3, 1e-2]}, "hidden": {"choice": [8, 16]}},
        num_samples=2, max_concurrent=1, scheduler={"type": "fifo"},
    )
    client = MlflowClient(stack.settings.mlflow.uri)
    driver = subprocess.Popen(
        [str(BIN / "ray-apps"), "sweep", spec], env=stack.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    killed_with: list = []
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        _, children = runs_of(client, "it-mlp")
        done = [r for r in trials(children) if r.info.status == "FINISHED"]
        going = [r for r in trials(children)
                 if r.info.status == "RUNNING" and "val_rank_ic" in r.data.metrics]
        if done and going:
            driver.send_signal(signal.SIGKILL)
            killed_with = done
            break
        time.sleep(0.2)
    driver.wait(30)
    assert killed_with, "the sweep ended before one trial finished and another was mid-way"
    parent, children = runs_of(client, "it-mlp")
    assert parent.info.status == "RUNNING"  # its driver died
    finished_id = killed_with[0].info.run_id

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
    for run in trials(children):
        assert {"learning_rate", "hidden", "epochs"} <= set(run.data.params)
        assert run.data.tags["epochs_trained"] == str(EPOCHS)

    # Checkpoints of every epoch and the model artifacts are on the S3 server.
    s3 = object_store_client(stack.settings)
    sweep_run = parent.data.tags["ray_apps.sweep_run"]
    keys = [o.object_name for o in s3.list_objects(
        stack.settings.s3.data_bucket, prefix=f"tune/{sweep_run}/", recursive=True)]
    finished_trial = killed_with[0].data.tags["ray_apps.trial_id"]
    saved = {re.search(r"checkpoint_(\d+)/models.pkl$", k).group(1)
             for k in keys if finished_trial in k and k.endswith("models.pkl")}
    assert len(saved) == EPOCHS
    final = next(r for r in children if r.data.tags["ray_apps.role"] == "final")
    version = client.get_model_version_by_alias("it-mlp", "challenger")
    model_id = version.source.removeprefix("models:/")  # the logged model, m-...
    artifacts = {o.object_name.rpartition(f"{model_id}/artifacts/")[2] for o in
                 s3.list_objects(stack.settings.s3.artifacts_bucket, prefix="artifacts/",
                                 recursive=True) if model_id in o.object_name}
    assert {"MLmodel", "python_model.pkl", "input_example.json"} <= artifacts

    # The alias points at the new version, whose run holds the test metrics and the tags.
    assert version.version == registered.group(1)
    assert version.run_id == final.info.run_id
    assert version.tags["feature_spec.version"] and version.tags["data.start"]
    assert {"test_ic", "test_rank_ic", "test_icir", "test_sharpe", "test_max_drawdown"} <= set(
        final.data.metrics
    )
    listed = [line for line in stack.ok("models", "list", "--name", "it-mlp").splitlines()
              if "@challenger" in line]
    assert len(listed) == 1 and listed[0].split()[:2] == ["it-mlp", registered.group(1)]

    # Loaded from the registry, the model scores exactly as the same parameters trained here.
    data = load_training_data(DataConfig(**DATA))
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
        tmp_path / "stream.yaml", "it-stream", "mlp", {"epochs": 4, "batch_size": 128},
        {"learning_rate": {"loguniform": [1e-3, 1e-2]}},
        num_samples=3, search={"algorithm": "optuna", "seed": 1},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        data={**DATA, "stream_rows": True},
    )
    done = stack.run(
        str(BIN / "ray"), "job", "submit", "--",
        "python", "-m", "ray_apps.jobs.sweep", spec, env=stack.job_env(),
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
        r.data.metrics["val_rank_ic"] for r in runs  # each trial's last report
    )


def test_a_spec_error_fails_before_any_trial(stack, tmp_path):
    spec = write_spec(
        tmp_path / "bad.yaml", "it-bad", "mlp", {}, {"dropout": {"uniform": [0.0, 1.5]}},
    )
    done = stack.cli("sweep", spec)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ray-apps: {spec}: search_space.dropout=1.5 -> model.params")
    parent, _ = runs_of(MlflowClient(stack.settings.mlflow.uri), "it-bad")
    assert parent is None
