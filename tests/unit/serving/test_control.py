import json
import stat

from ray_apps.config import Settings
from ray_apps.serving.control import ensure_admin_key


def test_the_admin_key_is_generated_once_beside_the_other_secrets(tmp_path):
    (tmp_path / "secrets.json").write_text(json.dumps({"redis_password": "r"}))
    settings = Settings(state_dir=tmp_path)
    assert settings.serve.admin_key is None
    where = ensure_admin_key(settings)
    path = tmp_path / "secrets.json"
    assert where.startswith(str(path)) and stat.S_IMODE(path.stat().st_mode) == 0o600
    key = settings.serve.admin_key.get_secret_value()
    assert len(key) >= 24 and key not in where
    again = Settings(state_dir=tmp_path)  # a later process reads the same key
    assert again.serve.admin_key.get_secret_value() == key
    assert again.redis.password.get_secret_value() == "r"
    assert ensure_admin_key(again) == where  # the next `serve up` names the file again
    assert json.loads(path.read_text())["serve_admin_key"] == key


def test_a_configured_admin_key_is_kept_and_not_written(tmp_path):
    settings = Settings(state_dir=tmp_path, serve={"admin_key": "mine"})
    assert ensure_admin_key(settings) == "RAY_APPS_SERVE__ADMIN_KEY"
    assert not (tmp_path / "secrets.json").exists()
