import json

import pytest

from ray_apps.config import Settings
from ray_apps.stack.mlflow_server import MlflowServer
from ray_apps.stack.ray_head import RayHead
from ray_apps.stack.tansu import TansuBroker

SECRETS = {
    "s3_access_key": "rayappsAK0001",
    "s3_secret_key": "s3-secret-0001-value",
    "redis_password": "redis-password-0001-value",
}


@pytest.fixture
def settings(tmp_path, monkeypatch):
    (tmp_path / "secrets.json").write_text(json.dumps(SECRETS))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "callers-aws-secret-value")
    monkeypatch.setenv("RAY_APPS_S3__SECRET_KEY", SECRETS["s3_secret_key"])
    return Settings(state_dir=tmp_path)


def test_the_ray_head_and_so_every_worker_gets_no_credential(settings):
    env = RayHead(settings).env()
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env.keys()
    values = "\n".join(env.values())
    for secret in (*SECRETS.values(), "callers-aws-secret-value"):
        assert secret not in values
    assert env["RAY_APPS_STATE_DIR"] == str(settings.state_dir)  # where jobs read the secrets
    assert env["RAY_AUTH_TOKEN_PATH"] == str(settings.ray_token_path)


@pytest.mark.parametrize("service", [MlflowServer, TansuBroker])
def test_the_services_that_use_s3_get_its_keys(settings, service):
    env = service(settings).env()
    assert env["AWS_ACCESS_KEY_ID"] == SECRETS["s3_access_key"]
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRETS["s3_secret_key"]


def test_the_ray_head_turns_on_serves_direct_ingress_on_its_own_ports(tmp_path):
    settings = Settings(state_dir=tmp_path, serve={"direct_ingress_port": 31000})
    env = RayHead(settings).env()
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    ports = (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"],
    )
    assert ports == ("31000", "31999")
    assert env["RAY_SERVE_PORT_QUARANTINE_S"] == "0"
    off = RayHead(Settings(state_dir=tmp_path, serve={"direct_ingress": False})).env()
    assert [key for key in off if key.startswith("RAY_SERVE_")] == [
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"
    ]
