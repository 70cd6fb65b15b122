"""Handing validated blocks to the offline-store actor: bounded in flight, retried on restart.

The actor is restarted by Ray when its process dies (``max_restarts=-1``). Both inserts are
idempotent (bars are keyed by symbol, interval and ts; quarantined rows by ingest id and row
number), so a call that failed because the actor went away is simply made again once it is
back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from ray_apps.errors import UserError

#: Blocks whose inserts may be outstanding at once (memory: one block is ~56 MB per 1M rows).
MAX_IN_FLIGHT = 3
#: Times Ray itself re-sends a call that the actor's death interrupted (it waits for the
#: restart); a call made while the actor is restarting fails at once, hence also:
RAY_RETRIES = 2
#: Tries of one insert before the ingest gives up, and the pause between them (doubling from
#: the first, at most the last): about 30 s for the actor to come back.
ATTEMPTS = 8
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


@dataclass
class _Call:
    """One actor call of a block, with what it needs to be made again."""

    method: str
    args: tuple[Any, ...]
    ref: ray.ObjectRef
    attempts: int = 1


@dataclass
class _Block:
    calls: list[_Call]
    counts: Any


class StoreWriter:
    """Writes blocks of bars and quarantined rows through the offline-store actor.

    Args:
        store: the offline-store actor (``insert_bars(table)``,
            ``insert_quarantine(rows, ingest_id, source)``).
        ingest_id: the ingest the quarantined rows belong to.
        source: the source name stored with quarantined rows.
        on_stored: called with a block's ``counts`` once all of its rows are stored.
        stored_rows: how many bars are stored so far, for the message when retries run out.
    """

    def __init__(
        self,
        store: ray.actor.ActorHandle,
        ingest_id: str,
        source: str,
        on_stored: Callable[[Any], None],
        stored_rows: Callable[[], int],
        max_in_flight: int = MAX_IN_FLIGHT,
        attempts: int = ATTEMPTS,
        first_backoff_s: float = FIRST_BACKOFF_S,
    ) -> None:
        self.store = store
        self.ingest_id = ingest_id
        self.source = source
        self.on_stored = on_stored
        self.stored_rows = stored_rows
        self.max_in_flight = max_in_flight
        self.attempts = attempts
        self.first_backoff_s = first_backoff_s
        self._blocks: list[_Block] = []

    def submit(self, bars: Any, quarantined: Any, counts: Any) -> None:
        """Start storing one block; waits first while ``max_in_flight`` blocks are outstanding.

        Args:
            bars: an Arrow table of bars, or a reference to one.
            quarantined: a frame of quarantined rows, or a reference to one.
            counts: what to hand to ``on_stored`` once the block is stored.
        """
        while len(self._blocks) >= self.max_in_flight:
            self._wait_one()
        bars_ref = bars if isinstance(bars, ray.ObjectRef) else ray.put(bars)
        rows_ref = quarantined if isinstance(quarantined, ray.ObjectRef) else ray.put(quarantined)
        calls = [
            self._call("insert_bars", (bars_ref, self.ingest_id)),
            self._call("insert_quarantine", (rows_ref, self.ingest_id, self.source)),
        ]
        self._blocks.append(_Block(calls=calls, counts=counts))

    def finish(self) -> None:
        """Wait until every submitted block is stored."""
        while self._blocks:
            self._wait_one()

    def _call(self, method: str, args: tuple[Any, ...], attempts: int = 1) -> _Call:
        method_handle = getattr(self.store, method).options(max_task_retries=RAY_RETRIES)
        ref = method_handle.remote(*args)
        return _Call(method=method, args=args, ref=ref, attempts=attempts)

    def _wait_one(self) -> None:
        """Wait for the next call to end; retry it if the actor went away."""
        refs = [call.ref for block in self._blocks for call in block.calls]
        ready, _ = ray.wait(refs, num_returns=1)
        for block in self._blocks:
            for call in block.calls:
                if call.ref == ready[0]:
                    self._settle(block, call)
                    break
        finished = [block for block in self._blocks if not block.calls]
        for block in finished:
            self._blocks.remove(block)
            self.on_stored(block.counts)

    def _settle(self, block: _Block, call: _Call) -> None:
        block.calls.remove(call)
        try:
            ray.get(call.ref)
        except RayActorError as exc:
            if call.attempts >= self.attempts:
                raise UserError(
                    f"the offline store failed {call.attempts} times in a row while storing "
                    f"{self.source} ({type(exc).__name__}); {self.stored_rows():,} rows were "
                    "stored so far: run the same command again (a re-ingest stores each bar once)"
                ) from exc
            time.sleep(min(self.first_backoff_s * 2 ** (call.attempts - 1), MAX_BACKOFF_S))
            block.calls.append(self._call(call.method, call.args, call.attempts + 1))
