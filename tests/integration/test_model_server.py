"""A model replica outside Serve, against the stack's Redis and MLflow: it rescores when the
online store says features changed, refuses a version trained on a spec the store lacks, and
its answers published to the predictions topic arrive there as answered."""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from ray_apps.config import Settings
from ray_apps.serving.model_server import ModelServer
from ray_apps.serving.models import load_served_model
from ray_apps.serving.predictions import PredictionPublisher
from ray_apps.serving.routing import CHAMPION
from ray_apps.serving.scoring import OnlineScorer, ScoreEntry
from ray_apps.stores.online import OnlineStore, redis_client
from ray_apps.streaming.topics import ensure_topics
from tests.integration.test_serve import published, register_version
from tests.integration.test_serving_parity import (
    DATES,
    MAX_AGE,
    SPEC_VERSION,
    SYMBOLS,
    raw_features,
)


def write(store: OnlineStore, raw, dates, event: bool = False) -> None:
    """Writes the rows of each date as one micro-batch, the last one with a batch event."""
    for date in dates:
        batch = pa.Table.from_pandas(raw[raw["ts"] == date], preserve_index=False)
        last = event and date == dates[-1]
        store.write_batch(batch, SPEC_VERSION, window=8, event_as_of=date if last else None)


@pytest.fixture(scope="module")
def served(stack):
    """A replica of version 1 serving dates up to ``DATES[-4]``; it polls and follows."""
    raw = raw_features()
    prefix = f"it-ms:{uuid.uuid4().hex[:8]}:"
    store = OnlineStore(redis_client(stack.settings), prefix=prefix)
    write(store, raw, DATES[:-3])
    client = MlflowClient(stack.settings.mlflow.uri)
    name = f"it-ms-{uuid.uuid4().hex[:6]}"
    first = register_version(client, raw, name, 1.0, "champion")
    serve = {
        "model_name": name,
        "feature_key_prefix": prefix,
        "max_feature_age_s": MAX_AGE.total_seconds(),
        "refresh_s": 4,  # the timer's longest: what follows at once is the event
        "poll_s": 1,
    }
    settings = Settings(**(stack.overrides | {"serve": serve}))
    server = ModelServer(settings, CHAMPION)
    yield {"server": server, "store": store, "raw": raw, "client": client, "first": first}
    server.close()  # its threads would otherwise poll the stack for the rest of the session


def expected_entries(stack, served):
    model = load_served_model(stack.settings.mlflow.uri, served["server"].name, CHAMPION)
    return OnlineScorer(served["store"], model, max_age=MAX_AGE).lookup(SYMBOLS)


def test_a_batch_event_rescores_the_universe_before_any_request(served, stack):
    server = served["server"]
    first = server.predict(["S00"])
    assert first[0].as_of == DATES[-4] and server.scored.as_of == DATES[-4]

    write(served["store"], served["raw"], DATES[-3:-1], event=True)
    while server.scored.as_of == DATES[-4]:  # no request meanwhile: the follower rescored
        time.sleep(0.05)
    assert server.scored.as_of == DATES[-3]
    everything = server.predict(SYMBOLS)
    assert everything == expected_entries(stack, served)
    assert everything[0].as_of == DATES[-3]


def test_a_version_trained_on_a_spec_the_store_lacks_is_refused_and_the_old_one_serves(
    served, stack
):
    server, client = served["server"], served["client"]
    name = server.name
    other = register_version(client, served["raw"], name, 5.0, None, spec_version="it-other")
    client.set_registered_model_alias(name, CHAMPION, other)
    try:
        info = server.refresh()
        assert info.version == served["first"]
        assert info.error == (
            f"model {name}@champion: version {other} was trained on feature spec version "
            f"'it-other', the online store holds '{SPEC_VERSION}'; version {served['first']} "
            "keeps serving"
        )
        assert server.predict(["S00"])[0].model_version == served["first"]
    finally:
        client.set_registered_model_alias(name, CHAMPION, served["first"])
    assert server.refresh().error is None


def test_published_predictions_are_the_answered_scores_with_their_version(served, stack):
    server = served["server"]
    settings = Settings(**(stack.overrides | {"serve": {"model_name": server.name}}))
    ensure_topics(settings)
    publisher = PredictionPublisher(settings)
    entries = server.predict([*SYMBOLS, "NOPE"])
    publisher.online("champion", entries)
    assert publisher.flush() == 0 and publisher.failed == 0

    scored = {e.symbol: e for e in entries if isinstance(e, ScoreEntry)}
    assert publisher.published == len(scored) and len(scored) < len(entries)
    got = published(settings, server.name, len(scored))
    for symbol, entry in scored.items():
        message = got[symbol]
        assert (message.score, message.rank, message.ts) == (entry.score, entry.rank, entry.as_of)
        assert (message.model_version, message.alias, message.source) == (
            served["first"],
            "champion",
            "online",
        )
