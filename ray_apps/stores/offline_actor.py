"""The one process that owns the offline store: a named, detached Ray actor.

The embedded engine (chdb) locks its folder to one process, so every reader and writer on the
cluster goes through this actor; with a ClickHouse server it simply holds the client. The actor
*is* an :class:`~ray_apps.stores.offline.OfflineStore` opened from the cluster's settings, so
every store method is callable on the handle (``store.bars.remote(...)``), Arrow tables in and
out.
"""

from __future__ import annotations

import ray
from ray.actor import ActorHandle

from ray_apps.config import Settings, load_settings
from ray_apps.stores.offline import OfflineStore

ACTOR_NAME = "offline-store"

OfflineStoreHandle = ActorHandle[OfflineStore]
"""A handle of the offline-store actor: ``OfflineStore``'s methods, called with ``.remote``."""


class OfflineStoreActor(OfflineStore):
    """The store opened from the settings the actor's process sees (the dashboard's name)."""

    def __init__(self) -> None:
        super().__init__(load_settings())


_remote_store = ray.remote(num_cpus=0, max_restarts=-1)(OfflineStoreActor)


def offline_store(settings: Settings) -> OfflineStoreHandle:
    """The cluster's offline-store actor, started on first use."""
    return _remote_store.options(
        name=ACTOR_NAME,
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote()
