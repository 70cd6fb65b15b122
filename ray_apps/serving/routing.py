"""Which version answers a request: the challenger with a given weight, sticky by client key."""

from __future__ import annotations

import hashlib
import random

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
