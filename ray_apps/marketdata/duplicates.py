"""Repeated ``(symbol, interval, ts)`` keys: within a chunk, and across the chunks of an ingest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def first_occurrences(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Which rows hold the first occurrence of their ``(group, ts)`` key, in row order.

    Args:
        group: an integer code of each row's (symbol, interval).
        ts: each row's timestamp as int64.
    """
    if len(group) < 2:
        return np.ones(len(group), dtype=bool)
    step_group, step_ts = np.diff(group), np.diff(ts)
    if ((step_group > 0) | ((step_group == 0) & (step_ts > 0))).all():
        return np.ones(len(group), dtype=bool)  # sorted by key, no repeats: the common case
    return ~pd.DataFrame({"group": group, "ts": ts}).duplicated(keep="first").to_numpy()


class SeenKeys:
    """The keys accepted so far in one ingest.

    A sorted int64 array of timestamps per (symbol, interval): 8 bytes per accepted row.
    """

    def __init__(self) -> None:
        self._ts: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return sum(len(times) for times in self._ts.values())

    def add_new(
        self,
        names: Sequence[tuple[str, str]],
        group: np.ndarray,
        ts: np.ndarray,
        candidate: np.ndarray,
    ) -> np.ndarray:
        """Which candidate rows carry a key not seen before; those keys are remembered.

        Args:
            names: the (symbol, interval) of each group code.
            group: each row's group code (an index into ``names``).
            ts: each row's timestamp as int64.
            candidate: the rows to look at, with no key repeated among them; the other rows
                are returned False.
        """
        new = np.zeros(len(group), dtype=bool)
        rows = np.flatnonzero(candidate)
        if rows.size == 0:
            return new
        order = rows[np.argsort(group[rows], kind="stable")]
        codes = group[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for begin, end in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            picked = order[begin:end]
            times = ts[picked]
            key = names[codes[begin]]
            known = self._ts.get(key)
            if known is None:
                fresh = np.ones(len(times), dtype=bool)
                self._ts[key] = np.sort(times)
            else:
                at = np.searchsorted(known, times)
                fresh = known[np.minimum(at, len(known) - 1)] != times
                self._ts[key] = np.union1d(known, times[fresh])
            new[picked[fresh]] = True
        return new
