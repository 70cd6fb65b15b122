"""The pieces of the sweep runner that need no servers: search space, scheduler, checkpoints."""

import numpy as np
import pyarrow.fs
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.training import sweep
from ray_apps.training.sweep import max_epochs, scheduler, searcher
from ray_apps.training.sweep_spec import Distribution, parse_sweep_spec
from ray_apps.training.trial import CHECKPOINT_FILE, newest_checkpoint


def spec(**extra):
    raw = {
        "name": "s",
        "model": {"name": "mlp", "params": {"epochs": 7}},
        "registry": {"name": "s"},
    }
    return parse_sweep_spec(raw | extra)


def test_distributions_sample_inside_their_bounds():
    rng = np.random.default_rng(0)
    forms = {
        "uniform": ([0.1, 0.3], float),
        "loguniform": ([1e-4, 1e-2], float),
        "randint": ([1, 4], int),
        "choice": ([8, 16, 32], int),
    }
    for kind, (bounds, kind_type) in forms.items():
        domain = Distribution(**{kind: bounds}).to_tune()
        values = domain.sample(size=200, random_state=rng)
        assert all(isinstance(v, kind_type | np.integer | np.floating) for v in values)
        if kind == "choice":
            assert set(values) == set(bounds)
        elif kind == "randint":
            assert set(values) == {1, 2, 3}  # high is exclusive, as the spec says
        else:
            assert bounds[0] <= min(values) and max(values) <= bounds[1]


def test_scheduler_search_and_epochs_follow_the_spec():
    asha = scheduler(spec(scheduler={"type": "asha", "grace_period": 2}), 7)
    assert isinstance(asha, ASHAScheduler)
    assert asha._max_t == 7 and asha._time_attr == "epoch"
    assert [rung for rung, _ in asha._brackets[0]._rungs] == [4, 2]  # grace 2, halving
    assert isinstance(scheduler(spec(scheduler={"type": "fifo"}), 7), FIFOScheduler)
    assert isinstance(scheduler(spec(), 1), FIFOScheduler)  # nothing to stop early
    assert isinstance(searcher(spec()), BasicVariantGenerator)
    limited = searcher(spec(search={"algorithm": "optuna"}, max_concurrent=2))
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
    assert max_epochs(spec()) == 7
    assert max_epochs(spec(search_space={"epochs": {"choice": [3, 12, 5]}})) == 12
    assert max_epochs(spec(model={"name": "momentum"})) == 1


def test_resume_starts_from_the_newest_complete_checkpoint(tmp_path):
    trial = tmp_path / "train_trial_ab12c_00001_1_lr=0.01_2026-11-26_01-00-00"
    for number, complete in [(1, True), (2, True), (3, False)]:
        folder = trial / f"checkpoint_{number:06d}"
        folder.mkdir(parents=True)
        if complete:
            (folder / CHECKPOINT_FILE).write_bytes(b"x")
    (trial / "result.json").write_text("{}")
    local = pyarrow.fs.LocalFileSystem()
    found = newest_checkpoint(local, str(tmp_path), "ab12c_00001")
    assert found.path.endswith(f"{trial.name}/checkpoint_000002")
    assert newest_checkpoint(local, str(tmp_path), "ab12c_00002") is None
    # Restored after the last state snapshot, the trial starts in a newly dated folder: until
    # that one holds a checkpoint, the earlier folder's newest is the one to go on from.
    restarted = tmp_path / "train_trial_ab12c_00001_1_lr=0.01_2026-11-26_02-00-00"
    restarted.mkdir()
    assert newest_checkpoint(local, str(tmp_path), "ab12c_00001").path == found.path
    (restarted / "checkpoint_000000").mkdir()
    (restarted / "checkpoint_000000" / CHECKPOINT_FILE).write_bytes(b"x")
    assert newest_checkpoint(local, str(tmp_path), "ab12c_00001").path.endswith(
        f"{restarted.name}/checkpoint_000000"
    )


def test_a_gpu_shortfall_fails_before_data_mlflow_or_any_run(monkeypatch):
    calls: list[str] = []

    class NoServer:
        def __init__(self, *args, **kwargs):
            calls.append("MlflowClient")

        def __getattr__(self, name):
            calls.append(name)
            raise RuntimeError(f"MLflow touched ({name}) before the GPU check")

    def touched(what):
        def record(*args, **kwargs):
            calls.append(what)
            raise RuntimeError(f"{what} before the GPU check")

        return record

    monkeypatch.setattr(sweep, "connect_ray", lambda settings: None)
    monkeypatch.setattr(sweep.ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(sweep, "tune_storage", lambda settings: ("bucket/tune", None))
    monkeypatch.setattr(sweep, "MlflowClient", NoServer)
    monkeypatch.setattr(sweep, "ensure_experiment", touched("ensure_experiment"))
    monkeypatch.setattr(sweep, "find_or_create_run", touched("find_or_create_run"))
    monkeypatch.setattr(sweep, "load_training_data", touched("load_training_data"))
    with pytest.raises(
        UserError,
        match=r"^resources.gpu: 2.0 GPU\(s\) per trial asked, the "
        r"cluster has 0$",
    ):
        sweep.run_sweep(spec(resources={"gpu": 2}), Settings(), echo=lambda line: None)
    assert calls == []
