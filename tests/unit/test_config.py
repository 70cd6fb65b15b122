import json

import pytest

from ray_apps.config import Settings, load_settings
from ray_apps.errors import UserError


def test_defaults_keep_redis_off_rays_port(tmp_path):
    settings = Settings(state_dir=tmp_path)
    assert settings.redis.port != settings.ray.port == 6379
    assert settings.state_dir.is_absolute()


def test_nested_env_and_yaml_file(tmp_path, monkeypatch):
    config = tmp_path / "ray-apps.yaml"
    config.write_text("redis:\n  port: 7001\nmlflow:\n  port: 5100\n")
    monkeypatch.setenv("RAY_APPS_CONFIG", str(config))
    monkeypatch.setenv("RAY_APPS_MLFLOW__PORT", "5200")
    settings = Settings(state_dir=tmp_path)
    assert settings.redis.port == 7001  # from the file
    assert settings.mlflow.port == 5200  # the environment wins over the file
    assert settings.mlflow.uri == "http://127.0.0.1:5200"


def test_bad_value_names_the_setting_and_its_variable(monkeypatch):
    monkeypatch.setenv("RAY_APPS_REDIS__PORT", "not-a-port")
    with pytest.raises(UserError, match=r"redis.port \(RAY_APPS_REDIS__PORT\)"):
        load_settings()


@pytest.mark.parametrize("port", ["0", "65536", "-5"])
def test_a_port_out_of_range_names_the_setting(port, monkeypatch):
    monkeypatch.setenv("RAY_APPS_REDIS__PORT", port)
    with pytest.raises(UserError, match=r"redis.port \(RAY_APPS_REDIS__PORT\): Input should be"):
        load_settings()


def test_unknown_key_in_yaml_is_rejected(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("redis:\n  prot: 7001\n")
    monkeypatch.setenv("RAY_APPS_CONFIG", str(config))
    with pytest.raises(UserError, match=r"redis\.prot"):
        load_settings()


def test_generated_secrets_fill_unset_credentials_and_never_print(tmp_path):
    (tmp_path / "secrets.json").write_text(
        json.dumps(
            {
                "s3_access_key": "AK123",
                "s3_secret_key": "SK-very-secret",
                "redis_password": "pw-very-secret",
            }
        )
    )
    settings = Settings(state_dir=tmp_path)
    assert settings.s3.secret_key.get_secret_value() == "SK-very-secret"
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in settings.model_dump_json()
    assert "very-secret" not in settings.redis_url


def test_external_services_take_their_urls(tmp_path):
    settings = Settings(
        state_dir=tmp_path, kafka={"managed": False, "bootstrap_servers": "k1:9092,k2:9092"}
    )
    assert settings.kafka.servers == "k1:9092,k2:9092"


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("RAY_APPS_REDIS__PROT", "RAY_APPS_REDIS__PROT: no such setting (redis has managed, "),
        ("RAY_APPS_STAT_DIR", "RAY_APPS_STAT_DIR: no such setting (settings are state_dir, "),
        ("RAY_APPS_STATE_DIR__X", "RAY_APPS_STATE_DIR__X: no such setting (state_dir is a value"),
    ],
)
def test_a_variable_that_names_no_setting_is_rejected(variable, message, monkeypatch):
    monkeypatch.setenv(variable, "1")
    with pytest.raises(UserError) as error:
        load_settings()
    assert str(error.value).startswith(message)


def test_the_yaml_file_and_the_debug_switch_are_not_settings(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("redis:\n  port: 7001\n")
    monkeypatch.setenv("RAY_APPS_CONFIG", str(config))
    monkeypatch.setenv("RAY_APPS_DEBUG", "1")
    assert load_settings(state_dir=tmp_path).redis.port == 7001


def test_a_bad_value_from_the_yaml_file_names_the_file(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("redis:\n  port: abc\n")
    monkeypatch.setenv("RAY_APPS_CONFIG", str(config))
    with pytest.raises(UserError, match=rf"^setting redis.port \(in {config}\): Input should"):
        load_settings()


def test_every_bad_value_is_named_on_one_line(monkeypatch):
    monkeypatch.setenv("RAY_APPS_REDIS__PORT", "abc")
    monkeypatch.setenv("RAY_APPS_KAFKA__PORT", "xyz")
    with pytest.raises(UserError) as error:
        load_settings()
    text = str(error.value)
    assert "\n" not in text
    assert "RAY_APPS_REDIS__PORT" in text and "RAY_APPS_KAFKA__PORT" in text


def test_serve_settings_pass_to_child_processes_without_their_keys(tmp_path, monkeypatch):
    settings = Settings(
        state_dir=tmp_path,
        serve={
            "symbols": ["AAPL", "MSFT"],
            "prediction_keys": ["p-secret"],
            "admin_key": "a-secret",
            "max_feature_age_s": 90,
        },
    )
    env = settings.public_env()
    assert "p-secret" not in str(env) and "a-secret" not in str(env)
    assert "RAY_APPS_SERVE__PREDICTION_KEYS" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.serve.symbols == ["AAPL", "MSFT"] and child.serve.max_feature_age_s == 90
    assert child.serve.prediction_keys == [] and child.serve.admin_key is None


def test_direct_ingress_ports_inside_the_ray_worker_ports_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"serve.direct_ingress_port: ports 29500-30499 overlap"):
        Settings(state_dir=tmp_path, serve={"direct_ingress_port": 29500})
    Settings(state_dir=tmp_path, serve={"direct_ingress_port": 29500, "direct_ingress": False})
