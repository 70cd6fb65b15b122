"""Online = offline: for every model kind, the scores served from the online store (real Redis)
by a model loaded from the registry (real MLflow, artifacts on S3) equal, symbol for symbol,
what the registered pyfunc gives offline on the same feature rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from ray_apps.errors import UserError
from ray_apps.features.training_set import cross_section
from ray_apps.models.catalog import build_model
from ray_apps.models.panel import Panel
from ray_apps.models.pyfunc import ScorePyfunc, model_input
from ray_apps.serving.models import load_served_model
from ray_apps.serving.scoring import ErrorEntry, OnlineScorer, ScoreEntry
from ray_apps.stores.online import OnlineStore, redis_client
from ray_apps.training.registry import register

SYMBOLS = [f"S{i:02d}" for i in range(24)]
DATES = pd.date_range("2024-01-01", periods=40, freq="D", tz="UTC")
FEATURES = ["f1", "f2", "f3"]
SPEC_VERSION = "it-serving-v1"
WINDOW = 8
LOOKBACK = 5
NEURAL = {"epochs": 2, "batch_size": 64, "device": "cpu", "seed": 1}
KINDS = {
    "ridge": {"alpha": 1.0},
    "mlp": {**NEURAL, "hidden": 8, "layers": 1},
    "lstm": {**NEURAL, "hidden": 8, "lookback": LOOKBACK},
    "transformer": {
        **NEURAL,
        "d_model": 8,
        "heads": 2,
        "layers": 1,
        "feedforward": 16,
        "lookback": LOOKBACK,
    },
    "gat": {**NEURAL, "batch_size": 8, "hidden": 8, "heads": 2, "layers": 1, "edges": "sector"},
}
AS_OF = DATES[-2]  # the last date of every symbol; half of them also have DATES[-1]
NO_ROW_AT_AS_OF = "S04"  # no vector at as_of (did not trade), a newer one exists
NAN_AT_AS_OF = "S05"  # an undefined feature at as_of
STALE = "S07"  # stopped at DATES[-4]: stale, yet in the cross-sections of its last dates
MAX_AGE = timedelta(days=1)


def raw_features() -> pd.DataFrame:
    """``symbol, ts, f1..f3``: a NaN at as_of, a row missing, a symbol that stopped."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame([(s, t) for t in DATES for s in SYMBOLS], columns=["symbol", "ts"])
    values = rng.normal(size=(len(frame), len(FEATURES)))
    frame[FEATURES] = values
    frame.loc[(frame["symbol"] == NAN_AT_AS_OF) & (frame["ts"] == AS_OF), "f2"] = np.nan
    late = frame["ts"] == DATES[-1]
    frame = frame[~late | frame["symbol"].isin(SYMBOLS[::2])]  # half are a bar ahead
    missing = (frame["symbol"] == NO_ROW_AT_AS_OF) & (frame["ts"] == AS_OF)
    stopped = (frame["symbol"] == STALE) & (frame["ts"] > DATES[-4])
    return frame[~missing & ~stopped].reset_index(drop=True)


def training_panel(raw: pd.DataFrame, features: Sequence[str] = FEATURES) -> Panel:
    """The features ranked per date, a target that depends on them, sectors for GAT."""
    features = list(features)
    rows = raw.dropna(subset=features)
    rows = cross_section(rows, features, "rank", 5)
    noise = np.random.default_rng(5).normal(scale=0.1, size=len(rows))
    rows = rows.assign(target=rows[features[0]] - 0.5 * rows[features[2]] + noise, ret=noise)
    sectors = {s: f"sector{i % 4}" for i, s in enumerate(SYMBOLS)}
    return Panel.from_frame(rows, features, "target", "ret", groups={"sector": sectors})


@pytest.fixture(scope="module")
def world(stack):
    """The raw features, written to Redis date by date as a stream does."""
    raw = raw_features()
    store = OnlineStore(redis_client(stack.settings), prefix=f"it:{uuid.uuid4().hex[:8]}:")
    for date in DATES:
        batch = pa.Table.from_pandas(raw[raw["ts"] == date], preserve_index=False)
        store.write_batch(batch, SPEC_VERSION, window=WINDOW)
    return raw, store, MlflowClient(stack.settings.mlflow.uri)


def registered_model(client: MlflowClient, raw: pd.DataFrame, kind: str) -> str:
    """Trains a tiny model of this kind, registers it as ``it-serving-KIND@champion``."""
    panel = training_panel(raw)
    model = build_model(kind, KINDS[kind], tuple(FEATURES))
    model.fit(panel, np.arange(len(panel.dates) - 3))
    experiment = client.get_experiment_by_name("it-serving")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("it-serving")
    )
    run_id = client.create_run(experiment_id, run_name=kind).info.run_id
    name = f"it-serving-{kind}"
    test_rows = model_input(raw[raw["ts"] >= DATES[-12]])
    register(
        client,
        run_id,
        ScorePyfunc(model, "rank", 5),
        test_rows,
        name,
        "champion",
        {"feature_spec.version": SPEC_VERSION, "model": kind},
    )
    return name


@pytest.mark.parametrize("kind", list(KINDS))
def test_online_scores_equal_the_registered_pyfunc_offline(world, stack, kind):
    raw, store, client = world
    name = registered_model(client, raw, kind)
    served = load_served_model(
        stack.settings.mlflow.uri, name, "champion", online_spec_versions={SPEC_VERSION}
    )
    assert served.lookback == (LOOKBACK if kind in ("lstm", "transformer") else 1)
    assert served.feature_spec_version == SPEC_VERSION and served.alias == "champion"
    assert served.run_id and served.feature_columns == tuple(FEATURES)

    scorer = OnlineScorer(store, served, max_age=MAX_AGE)
    online = scorer.current()
    assert online.as_of == AS_OF and online.newest == DATES[-1]

    # Offline: the registered pyfunc on the last `lookback` dates up to as_of, all symbols.
    dates = DATES[DATES <= AS_OF][-served.lookback :]
    rows = raw[raw["ts"].isin(dates)]
    offline = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(model_input(rows))
    at = pd.to_datetime(offline["ts"]) == AS_OF.tz_convert(None)
    expected = offline[at].set_index("symbol")["score"]
    scored = expected.dropna()
    assert len(scored) == len(SYMBOLS) - 3
    assert sorted(online.scores) == sorted(scored.index)
    # Exact: the same float64 rows reach the same model in the same order.
    np.testing.assert_array_equal([online.scores[s] for s in scored.index], scored.to_numpy())
    ranks = scored.rank(ascending=False, method="min").astype(int)
    assert online.ranks == ranks.to_dict()
    assert {s: e.code for s, e in online.errors.items()} == {
        NO_ROW_AT_AS_OF: "no_score",
        NAN_AT_AS_OF: "no_score",
        STALE: "stale_features",
    }

    # One symbol or all of them: the same entry, from one scoring.
    everything = {entry.symbol: entry for entry in scorer.lookup()}
    assert set(everything) == set(SYMBOLS)
    for symbol in SYMBOLS:
        assert scorer.lookup([symbol]) == [everything[symbol]]
    assert isinstance(everything["S00"], ScoreEntry)
    assert isinstance(everything[NAN_AT_AS_OF], ErrorEntry)
    assert scorer.current() is online and len(scorer.cache) == 1


def test_loading_refuses_a_missing_alias_another_spec_version_and_an_unloadable_model(world, stack):
    _, _, client = world
    uri = stack.settings.mlflow.uri
    with pytest.raises(UserError, match="model nobody@champion: no such registered model"):
        load_served_model(uri, "nobody", "champion")
    name = "it-serving-broken"
    client.create_registered_model(name)
    experiment_id = client.create_experiment("it-serving-broken")
    run_id = client.create_run(experiment_id).info.run_id  # it logs no model
    version = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    client.set_model_version_tag(name, version.version, "feature_spec.version", SPEC_VERSION)
    client.set_registered_model_alias(name, "champion", version.version)
    with pytest.raises(UserError, match=f"model {name}@challenger: no such registered model"):
        load_served_model(uri, name, "challenger")
    with pytest.raises(
        UserError,
        match=rf"model {name}@champion: version 1 was trained on "
        rf"feature spec version '{SPEC_VERSION}', the online store holds 'v2', 'v3'",
    ):
        load_served_model(uri, name, "champion", online_spec_versions={"v2", "v3"})
    with pytest.raises(UserError, match=rf"model {name}@champion: version 1 does not load"):
        load_served_model(uri, name, "champion", online_spec_versions={SPEC_VERSION})
