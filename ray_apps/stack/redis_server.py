"""Redis (Debian ``redis-server``) with an append-only file: the online feature store."""

from __future__ import annotations

import os

from typing_extensions import override

from ray_apps.stack.service import Service, find_binary
from ray_apps.stores.online import redis_client


class RedisServer(Service):
    """Online store; on a port other than 6379, which Ray's GCS takes."""

    name = "redis"
    port_setting = "RAY_APPS_REDIS__PORT"

    @override
    @property
    def managed(self) -> bool:
        return self.settings.redis.managed

    @override
    @property
    def url(self) -> str:
        return self.settings.redis_url

    @override
    def ports(self) -> dict[str, int]:
        return {"redis": self.settings.redis.port}

    @property
    def _config_path(self):
        return self.settings.state_dir / "redis.conf"

    @override
    def prepare(self) -> None:
        super().prepare()
        cfg = self.settings.redis
        assert cfg.password is not None
        lines = [
            f"bind {cfg.host}",
            f"port {cfg.port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {self.data_dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            'logfile ""',
            f"requirepass {cfg.password.get_secret_value()}",
        ]
        self._config_path.write_text("\n".join(lines) + "\n")
        os.chmod(self._config_path, 0o600)

    @override
    def command(self) -> list[str]:
        binary = find_binary(
            "redis-server",
            "install it with `apt-get install redis-server` (./cluster/setup.sh does)",
        )
        return [binary, str(self._config_path)]

    @override
    def healthy(self) -> bool:
        return bool(redis_client(self.settings).ping())
