"""Which version answers a request: the challenger with a given weight, sticky by client key."""

from __future__ import annotations

import hashlib
import random
from collections import deque

CHAMPION = "champion"
CHALLENGER = "challenger"


def route(weight: float, client_key: str | None = None, draw: random.Random | None = None) -> str:
    """``challenger`` for a share ``weight`` of requests, else ``champion``.

    Args:
        weight: the challenger's share, 0 to 1.
        client_key: when given, the same key always gets the same answer for a given weight
            (a hash of the key in [0, 1) is compared with the weight, so raising the weight
            only moves clients from the champion to the challenger).
        draw: the random source for requests without a key.
    """
    if weight <= 0:
        return CHAMPION
    if weight >= 1:
        return CHALLENGER
    point = _key_point(client_key) if client_key else (draw or random).random()
    return CHALLENGER if point < weight else CHAMPION


def _key_point(key: str) -> float:
    """A point in [0, 1) fixed by the key."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ChallengerGuard:
    """Judges the challenger on its last ``window`` requests: too many bad ones trip it.

    A request is bad when it failed, or took longer than ``max_latency_ms`` (when given).

    Args:
        window: requests judged together (none is judged before ``window`` were seen).
        max_error_rate: the share of bad requests above which the guard trips.
        max_latency_ms: a slower request counts as bad (None: no limit).
    """

    def __init__(
        self, window: int, max_error_rate: float, max_latency_ms: float | None = None
    ) -> None:
        self.max_error_rate = max_error_rate
        self.max_latency_ms = max_latency_ms
        self._bad: deque[bool] = deque(maxlen=window)

    def record(self, ok: bool, latency_ms: float) -> bool:
        """Records one request; True when the window's share of bad requests passes the limit."""
        slow = self.max_latency_ms is not None and latency_ms > self.max_latency_ms
        self._bad.append(not ok or slow)
        full = len(self._bad) == self._bad.maxlen
        return full and sum(self._bad) / len(self._bad) > self.max_error_rate

    def reset(self) -> None:
        """Forgets the requests seen (a new challenger starts clean)."""
        self._bad.clear()
