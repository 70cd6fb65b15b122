"""Row models trained from a Ray Dataset stream learn what they learn from the panel."""

import numpy as np
import pandas as pd
import pytest
import ray

from ray_apps.models.catalog import build_model
from ray_apps.models.neural import NeuralModel
from ray_apps.models.panel import Panel
from ray_apps.training.streaming import panel_rows, rows_dataset

COLUMNS = ("a", "b", "c")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def panel() -> Panel:
    rng = np.random.default_rng(3)
    dates = pd.date_range("2024-01-01", periods=30, tz="UTC")
    frame = pd.DataFrame(
        [(s, t) for t in dates for s in ["A", "B", "C", "D", "E", "F"]], columns=["symbol", "ts"]
    )
    x = rng.normal(size=(len(frame), 3))
    frame[list(COLUMNS)] = x
    frame["y"] = x @ [0.5, -0.2, 0.1] + 0.05 * rng.normal(size=len(frame))
    frame.loc[3, "b"] = np.nan  # one undefined sample, dropped by both paths
    return Panel.from_frame(frame, COLUMNS, "y")


def test_full_batch_training_from_the_stream_equals_training_from_the_panel(local_ray):
    data = panel()
    train = np.arange(20)
    params = {"epochs": 5, "batch_size": 10_000, "dropout": 0.0, "hidden": 8}
    in_memory = build_model("mlp", params, COLUMNS)
    in_memory.fit(data, train)
    streamed = build_model("mlp", params, COLUMNS)
    rows = panel_rows(data, train)
    assert rows.count() == len(data.samples(train)[0]) == 20 * 6 - 1
    assert list(streamed.fit_stream_steps(rows)) == [1, 2, 3, 4, 5]
    test = np.arange(20, 30)
    np.testing.assert_allclose(
        streamed.predict(data, test), in_memory.predict(data, test), rtol=1e-4, atol=1e-6
    )


def test_shuffled_minibatch_stream_learns_and_refuses_window_models(local_ray):
    data = panel()
    frame = pd.DataFrame(data.features[:20].reshape(-1, 3), columns=list(COLUMNS))
    frame["label_1"] = data.target[:20].reshape(-1)
    rows = rows_dataset(ray.data.from_pandas(frame), COLUMNS, "label_1")
    model = build_model("mlp", {"epochs": 30, "batch_size": 16, "learning_rate": 0.01}, COLUMNS)
    list(model.fit_stream_steps(rows, shuffle_buffer=64))
    scores = model.predict(data, np.arange(20, 30))
    keep = np.isfinite(scores)
    assert np.corrcoef(scores[keep], data.target[20:30][keep])[0, 1] > 0.9
    lstm = build_model("lstm", {"lookback": 3}, COLUMNS)
    with pytest.raises(ValueError, match="only row models"):
        next(lstm.fit_stream_steps(rows))


def test_streamed_epochs_are_shuffled_differently_and_reproducibly(local_ray, monkeypatch):
    seen: list[np.ndarray] = []
    step = NeuralModel._step

    def recording(optimizer, score, target):
        seen.append(target.detach().numpy().copy())
        step(optimizer, score, target)

    monkeypatch.setattr(NeuralModel, "_step", staticmethod(recording))
    rows = panel_rows(panel(), np.arange(20))
    params = {"epochs": 2, "batch_size": 16, "hidden": 8}
    first = build_model("mlp", params, COLUMNS)
    list(first.fit_stream_steps(rows))  # the trials' and the final fit's call
    per_epoch = len(seen) // 2
    epoch_1, epoch_2 = np.concatenate(seen[:per_epoch]), np.concatenate(seen[per_epoch:])
    in_order = np.concatenate([b["y"] for b in rows.iter_batches(batch_size=None)])
    assert sorted(epoch_1) == sorted(epoch_2) == sorted(in_order)  # every row once per epoch
    assert not np.array_equal(epoch_1, in_order)
    assert not np.array_equal(epoch_1, epoch_2)
    again = list(seen)
    seen.clear()
    list(build_model("mlp", params, COLUMNS).fit_stream_steps(rows))
    np.testing.assert_array_equal(np.concatenate(seen), np.concatenate(again))
