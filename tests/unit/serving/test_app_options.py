"""The Serve application's deployments are sized by ``settings.serve`` (no Serve started)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ray_apps.config import Settings
from ray_apps.serving.app import build_application


def model_deployments(settings: Settings):
    ingress = build_application(settings)._bound_deployment
    return ingress, [arg._bound_deployment for arg in ingress.init_args[1:]]


def test_defaults_fit_two_cores_with_fixed_replicas():
    ingress, models = model_deployments(Settings())
    assert ingress.num_replicas == 1 and ingress.ray_actor_options["num_cpus"] == 0.1
    assert [m.name for m in models] == ["champion", "challenger"]
    for model in models:
        assert model.num_replicas == 1 and model.ray_actor_options["num_cpus"] == 0.1
        assert model._deployment_config.autoscaling_config is None
    held = sum(d.ray_actor_options["num_cpus"] for d in (ingress, *models))
    assert 2 - held - Settings().stream.consumer_cpus >= 1  # with a consumer: a task still starts


def test_model_max_replicas_turns_on_autoscaling_from_model_replicas():
    settings = Settings(
        serve={"model_replicas": 2, "model_max_replicas": 6, "target_ongoing_requests": 4}
    )
    _, models = model_deployments(settings)
    for model in models:
        scaling = model._deployment_config.autoscaling_config
        assert (scaling.min_replicas, scaling.max_replicas) == (2, 6)
        assert scaling.target_ongoing_requests == 4


def test_a_maximum_below_the_minimum_names_both_settings():
    with pytest.raises(
        ValidationError, match=r"model_max_replicas \(1\) is below model_replicas \(3\)"
    ):
        Settings(serve={"model_replicas": 3, "model_max_replicas": 1})
