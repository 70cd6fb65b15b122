"""Every model: forward and backward passes, fit/predict on a small panel, pickling, errors."""

import ast
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ray_apps.errors import UserError
from ray_apps.models import modules
from ray_apps.models.catalog import MODELS, build_model
from ray_apps.models.neural import GATModel, correlation_edges, group_edges
from ray_apps.models.panel import Panel

SYMBOLS = ["AAPL", "MSFT", "IBM", "XOM", "CVX", "JPM", "BAC", "KO", "PEP", "PFE", "MRK", "GE"]
COLUMNS = ("f0", "f1", "f2")
SECTORS = {
    "AAPL": "IT",
    "MSFT": "IT",
    "IBM": "IT",
    "XOM": "Energy",
    "CVX": "Energy",
    "JPM": "Financials",
    "BAC": "Financials",
    "KO": "Staples",
    "PEP": "Staples",
    "PFE": "Health",
    "MRK": "Health",
}  # GE left out: unknown
SMALL = {
    "mlp": {"epochs": 3, "hidden": 8},
    "lstm": {"epochs": 2, "lookback": 5, "hidden": 8},
    "transformer": {"epochs": 2, "lookback": 5, "d_model": 8, "heads": 2, "feedforward": 16},
    "gat": {"epochs": 3, "hidden": 8, "heads": 2, "batch_size": 4},
    "ridge": {"alpha": 0.1},
    "momentum": {"column": "f0"},
}


def small_panel(dates: int = 60, seed: int = 0, groups: bool = True) -> Panel:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=dates, tz="UTC")
    frame = pd.DataFrame([(s, t) for t in ts for s in SYMBOLS], columns=["symbol", "ts"])
    x = rng.normal(size=(len(frame), 3))
    frame[list(COLUMNS)] = x
    frame["label_1"] = x[:, 0] - 0.5 * x[:, 1] + 0.1 * rng.normal(size=len(frame))
    frame["return_1"] = 0.01 * frame["label_1"]
    frame.loc[frame.index[:5], "f2"] = np.nan  # warm-up holes
    return Panel.from_frame(
        frame,
        COLUMNS,
        "label_1",
        "return_1",
        "return_1",
        {"sector": SECTORS} if groups else None,
    )


def test_panel_pivots_rows() -> None:
    panel = small_panel()
    assert panel.shape == (60, 12, 3)
    assert list(panel.symbols) == sorted(SYMBOLS)
    assert not panel.defined()[0].all() and panel.defined()[1:].all()
    windows = panel.window_defined(3)
    assert not windows[:2].any()  # fewer than 3 dates of history
    aapl, ge = np.searchsorted(panel.symbols, ["AAPL", "GE"])
    assert windows[2, ge]  # GE has no hole
    assert not windows[2, aapl] and windows[3, aapl]  # AAPL's hole on date 0 leaves at 3


@pytest.mark.parametrize(
    ("module", "inputs"),
    [
        (modules.MLP(3, 8, 2, 0.1), (torch.randn(7, 3),)),
        (modules.LSTMNet(3, 8, 2, 0.1), (torch.randn(7, 5, 3),)),
        (modules.TransformerNet(3, 5, 8, 2, 2, 16, 0.1), (torch.randn(7, 5, 3),)),
        (
            modules.GATNet(3, 8, 2, 2, 0.1),
            (torch.randn(2, 6, 3), torch.rand(6, 6) > 0.5, torch.rand(2, 6) > 0.2),
        ),
    ],
)
def test_forward_and_backward(module: torch.nn.Module, inputs: tuple) -> None:
    out = module(*inputs)
    expected = (2, 6) if isinstance(module, modules.GATNet) else (7,)
    assert out.shape == expected and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_predict_and_pickle(name: str) -> None:
    panel = small_panel()
    model = build_model(name, SMALL[name], COLUMNS)
    epochs: list[int] = []
    model.fit(panel, np.arange(40), lambda epoch, _: epochs.append(epoch))
    assert epochs == list(range(1, model.epochs + 1))
    dates = np.arange(40, 60)
    scores = model.predict(panel, dates)
    assert scores.shape == (20, 12)
    assert np.isfinite(scores).all()  # every test input is defined
    early = model.predict(panel, np.arange(0, 3))
    assert np.isnan(early[0]).any()  # date 0 has undefined features
    again = pickle.loads(pickle.dumps(model)).predict(panel, dates)
    np.testing.assert_array_equal(again, scores)


def test_models_learn_a_linear_signal() -> None:
    panel = small_panel(dates=120)
    from ray_apps.training.metrics import ic_by_date

    for name, params in (("ridge", {}), ("mlp", {"epochs": 20, "hidden": 16, "batch_size": 64})):
        model = build_model(name, params, COLUMNS)
        model.fit(panel, np.arange(80))
        ic = np.nanmean(ic_by_date(model.predict(panel, np.arange(80, 120)), panel.target[80:]))
        assert ic > 0.8, (name, ic)


def test_an_epoch_report_can_stop_training() -> None:
    model = build_model("mlp", {"epochs": 10, "hidden": 4}, COLUMNS)
    seen: list[int] = []
    model.fit(small_panel(), np.arange(40), lambda epoch, _: seen.append(epoch) or epoch == 2)
    assert seen == [1, 2]


def test_bad_model_specs_name_the_field() -> None:
    with pytest.raises(UserError, match=r"model.name: unknown model 'xgb'"):
        build_model("xgb", {}, COLUMNS)
    with pytest.raises(UserError, match=r"model.params \(lstm\): lookback: .*greater than or"):
        build_model("lstm", {"lookback": 0}, COLUMNS)
    with pytest.raises(UserError, match=r"model.params \(mlp\): hiden: Extra inputs"):
        build_model("mlp", {"hiden": 3}, COLUMNS)
    with pytest.raises(UserError, match="not divisible by heads"):
        build_model("transformer", {"d_model": 10, "heads": 4}, COLUMNS)
    with pytest.raises(UserError, match="column 'logret_20' is not a feature"):
        build_model("momentum", {"column": "logret_20"}, COLUMNS)


def test_sector_and_correlation_edges() -> None:
    panel = small_panel()
    assert dict(zip(panel.symbols, panel.groups["sector"], strict=True)) == SECTORS | {"GE": ""}
    edges = group_edges(np.array(["Energy", "Energy", "Staples", "Staples", ""]))
    assert edges[0, 1] and edges[2, 3] and not edges[0, 2]
    assert edges[4, 4] and edges[4].sum() == 1  # an unknown symbol links to itself only
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 1))
    returns = np.hstack([base, base + 0.01 * rng.normal(size=(200, 1)), rng.normal(size=(200, 2))])
    nearest = correlation_edges(returns, top_k=1)
    assert nearest[0, 1] and nearest[1, 0]
    assert (nearest == nearest.T).all() and nearest.diagonal().all()


@pytest.mark.parametrize("name", ["mlp", "lstm", "gat"])
def test_training_resumed_from_a_pickle_equals_unbroken_training(name: str) -> None:
    panel = small_panel()
    params = {**SMALL[name], "epochs": 4, "dropout": 0.3}
    unbroken = build_model(name, params, COLUMNS)
    unbroken.fit(panel, np.arange(40))
    halted = build_model(name, params, COLUMNS)
    halted.fit(panel, np.arange(40), lambda epoch, _: epoch == 2)
    resumed = pickle.loads(pickle.dumps(halted))
    torch.manual_seed(12345)  # a new process: the global generator is elsewhere
    assert list(resumed.fit_steps(panel, np.arange(40))) == [3, 4]
    dates = np.arange(40, 60)
    np.testing.assert_allclose(
        resumed.predict(panel, dates), unbroken.predict(panel, dates), rtol=1e-5, atol=1e-6
    )


def test_gat_group_edges_come_from_the_panel_and_are_refused_without_it() -> None:
    model = build_model("gat", SMALL["gat"], COLUMNS)
    model.fit(small_panel(), np.arange(40))
    index = {s: i for i, s in enumerate(model.symbols)}
    assert model.adjacency[index["XOM"], index["CVX"]]
    assert not model.adjacency[index["XOM"], index["KO"]]
    assert model.adjacency[index["GE"]].sum() == 1
    bare = small_panel(groups=False)  # e.g. rows a served model gets: the learned graph stays
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(
        restored.predict(bare, np.arange(40, 60)), model.predict(small_panel(), np.arange(40, 60))
    )
    untrained = build_model("gat", {**SMALL["gat"], "edges": "industry"}, COLUMNS)
    assert isinstance(untrained, GATModel)
    with pytest.raises(ValueError, match=r"^model.params.edges: 'industry' needs the industry"):
        untrained.fit(small_panel(), np.arange(40))
    correlated = build_model("gat", {**SMALL["gat"], "edges": "correlation"}, COLUMNS)
    correlated.fit(bare, np.arange(40))  # needs no classification


def test_models_never_import_a_higher_layer_or_marketdata() -> None:
    higher = (
        "ray_apps.marketdata",
        "ray_apps.training",
        "ray_apps.jobs",
        "ray_apps.cli",
        "ray_apps.serving",
        "ray_apps.streaming",
    )
    package = Path(__file__).parents[3] / "ray_apps" / "models"
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            found += [f"{path.name}: {n}" for n in names if n.startswith(higher)]
    assert found == []
