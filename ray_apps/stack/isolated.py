"""Settings for a private stack beside any other: its own state folder and free ports.

Tests, benchmarks and notebooks use it to run a whole stack without touching the user's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ray_apps._private.processes import port_is_free
from ray_apps.stack.seaweedfs import GRPC_OFFSET


def free_ports(count: int, low: int = 21000, high: int = 30000) -> list[int]:
    """``count`` ports p in [low, high) with p and p + 10000 free (SeaweedFS's gRPC ports)."""
    candidates = list(range(low, high))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        if port_is_free(port) and port_is_free(port + GRPC_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"fewer than {count} free ports in {low}..{high}")


def isolated_overrides(state_dir: Path) -> dict[str, Any]:
    """Settings overrides (``Settings(**overrides)``) for a private stack in ``state_dir``."""
    s3, master, volume, filer, redis, kafka, mlflow, gcs, dash, client, agent, http = free_ports(12)
    worker = random.randrange(42000, 58000, 1000)
    return {
        "state_dir": str(state_dir),
        "s3": {"port": s3, "master_port": master, "volume_port": volume, "filer_port": filer},
        "redis": {"port": redis},
        "kafka": {"port": kafka},
        "mlflow": {"port": mlflow},
        "serve": {"port": http},
        "ray": {
            "port": gcs,
            "dashboard_port": dash,
            "client_server_port": client,
            "dashboard_agent_listen_port": agent,
            "min_worker_port": worker,
            "max_worker_port": worker + 999,
        },
    }


def redis_only_overrides(state_dir: Path) -> dict[str, Any]:
    """Settings overrides for a private stack of Redis alone (the online store), on a free port.

    ``stack_up`` then starts only Redis; the other services are marked external and left alone.
    """
    (redis,) = free_ports(1)
    return {
        "state_dir": str(state_dir),
        "redis": {"port": redis},
        "ray": {"managed": False},
        "s3": {"managed": False},
        "kafka": {"managed": False},
        "mlflow": {"managed": False},
    }
