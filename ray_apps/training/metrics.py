"""How good a score is: information coefficients, direction, error and a long-short portfolio.

Every function takes [D, A] arrays (dates x assets) with NaN where a value is undefined; only
pairs where both sides are defined count. Cross-sectional figures (IC, rank IC, the
portfolio) are computed per date and then averaged over dates.

Which target each figure uses (:func:`evaluate`):

- ``ic``, ``rank_ic``, ``icir``, ``rank_icir``, ``directional_accuracy``: the raw log return
  over the label's horizon (``log(close[t+h] / close[t])``), not the rank-normalized label the
  model trained on. Rank IC is the same either way (a per-date rank keeps the order); IC and
  accuracy are not.
- ``label_mse``: squared error of the score against the label the model trained on (ranked or
  z-scored per date, as the spec's ``data.normalize``); a score is on that label's scale, not
  on the raw return's, so an error against the raw return would mean nothing.
- the portfolio (``annual_return``, ``sharpe``, ``max_drawdown``, ``turnover``): raw next-bar
  returns, rebalanced every bar.

The portfolio is formed at each date's close: long the top ``quantile`` of assets by score
and short the bottom one, equal weights, one unit each side (dollar neutral). It earns the
next bar's simple return ``exp(r) - 1`` and pays ``cost_bps`` on every unit of weight traded
when rebalancing. Annual return, Sharpe ratio and maximum drawdown follow empyrical's
definitions (geometric annual return, Sharpe with the sample standard deviation, drawdown from
the running peak of wealth that starts at 1).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ray_apps.models.panel import Panel

MIN_ASSETS = 3
"""Fewer assets on a date than this give no cross-sectional figure for it."""

METRICS = (
    "ic",
    "rank_ic",
    "icir",
    "rank_icir",
    "directional_accuracy",
    "label_mse",
    "annual_return",
    "sharpe",
    "max_drawdown",
    "turnover",
)
"""Every metric :func:`evaluate` returns."""


class PortfolioConfig(BaseModel):
    """The long-short portfolio evaluated from a score.

    Attributes:
        quantile: share of assets held long (top) and short (bottom) each date.
        cost_bps: cost of trading one unit of weight, in basis points.
        periods_per_year: bars in a year (252 for daily bars).
    """

    model_config = ConfigDict(extra="forbid")

    quantile: float = Field(0.2, gt=0, le=0.5)
    cost_bps: float = Field(10.0, ge=0)
    periods_per_year: float = Field(252.0, gt=0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as scipy's rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    if len(values) < len(x):
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / np.bincount(inverse))[inverse]
    return ranks


def ic_by_date(scores: np.ndarray, target: np.ndarray, rank: bool = False) -> np.ndarray:
    """Pearson (or, with ``rank``, Spearman) correlation of score and target on each date.

    Returns:
        float [D]; NaN on dates with fewer than :data:`MIN_ASSETS` pairs or no spread.
    """
    out = np.full(scores.shape[0], np.nan)
    for d in range(scores.shape[0]):
        both = np.isfinite(scores[d]) & np.isfinite(target[d])
        if both.sum() < MIN_ASSETS:
            continue
        x, y = scores[d, both].astype(np.float64), target[d, both].astype(np.float64)
        out[d] = _pearson(_ranks(x), _ranks(y)) if rank else _pearson(x, y)
    return out


def information_ratio(series: np.ndarray) -> float:
    """Mean over standard deviation (sample, ddof 1) of a per-date series, NaNs skipped."""
    values = series[np.isfinite(series)]
    if len(values) < 2:
        return math.nan
    std = float(values.std(ddof=1))
    return float(values.mean()) / std if std > 0 else math.nan


def directional_accuracy(scores: np.ndarray, target: np.ndarray) -> float:
    """Share of pairs where score and target sit on the same side of their date's mean.

    Centering per date makes the figure meaningful for ranked or z-scored targets too: it is
    the hit rate of "this asset beats the cross-section".
    """
    both = np.isfinite(scores) & np.isfinite(target)
    hits = total = 0
    for d in range(scores.shape[0]):
        row = both[d]
        if row.sum() < 2:
            continue
        x = scores[d, row] - scores[d, row].mean()
        y = target[d, row] - target[d, row].mean()
        decided = (x != 0) & (y != 0)
        hits += int(np.sum(np.sign(x[decided]) == np.sign(y[decided])))
        total += int(decided.sum())
    return hits / total if total else math.nan


def mean_squared_error(scores: np.ndarray, target: np.ndarray) -> float:
    """Mean squared difference over the defined pairs."""
    both = np.isfinite(scores) & np.isfinite(target)
    if not both.any():
        return math.nan
    return float(np.mean((scores[both].astype(np.float64) - target[both]) ** 2))


def long_short_returns(
    scores: np.ndarray, log_returns: np.ndarray, config: PortfolioConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Net returns and turnover of the long-short portfolio, one per date it could trade.

    Args:
        scores: [D, A] scores known at each date's close.
        log_returns: [D, A] log return of each asset over the next bar.
        config: quantile, costs and calendar.

    Returns:
        (net returns, turnover) per tradable date; turnover is half the weight traded, so
        replacing the whole book once is 1.
    """
    config = config or PortfolioConfig()
    previous = np.zeros(scores.shape[1])
    net, turnover = [], []
    for d in range(scores.shape[0]):
        usable = np.flatnonzero(np.isfinite(scores[d]) & np.isfinite(log_returns[d]))
        count = int(len(usable) * config.quantile)
        if count < 1 or 2 * count > len(usable):
            continue
        order = usable[np.argsort(scores[d, usable], kind="mergesort")]
        weights = np.zeros(scores.shape[1])
        weights[order[-count:]] = 1.0 / count
        weights[order[:count]] = -1.0 / count
        traded = float(np.abs(weights - previous).sum())
        gross = float(weights[usable] @ np.expm1(log_returns[d, usable]))
        net.append(gross - traded * config.cost_bps / 1e4)
        turnover.append(traded / 2)
        previous = weights
    return np.asarray(net), np.asarray(turnover)


def annual_return(returns: np.ndarray, periods_per_year: float) -> float:
    """Geometric annual return of per-period simple returns."""
    if len(returns) == 0:
        return math.nan
    wealth = float(np.prod(1.0 + returns))
    return wealth ** (periods_per_year / len(returns)) - 1.0 if wealth > 0 else -1.0


def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualized Sharpe ratio (risk-free rate 0, sample standard deviation)."""
    if len(returns) < 2:
        return math.nan
    std = float(returns.std(ddof=1))
    return float(returns.mean()) / std * math.sqrt(periods_per_year) if std > 0 else math.nan


def max_drawdown(returns: np.ndarray) -> float:
    """Largest fall of wealth from its running peak (wealth starts at 1), as a negative share."""
    if len(returns) == 0:
        return math.nan
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + returns)))
    peak = np.maximum.accumulate(wealth)
    return float(np.min((wealth - peak) / peak))


def evaluate(
    scores: np.ndarray,
    *,
    forward_return: np.ndarray,
    next_return: np.ndarray,
    label: np.ndarray,
    config: PortfolioConfig | None = None,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for a score on a period.

    Args:
        scores: [D, A] model scores.
        forward_return: [D, A] raw log return over the label's horizon (for IC, rank IC,
            their ratios and directional accuracy).
        next_return: [D, A] raw next-bar log returns (for the portfolio).
        label: [D, A] the (normalized) label the model was trained on (for ``label_mse``).
        config: the portfolio.
    """
    config = config or PortfolioConfig()
    ic = ic_by_date(scores, forward_return)
    rank_ic = ic_by_date(scores, forward_return, rank=True)
    net, turnover = long_short_returns(scores, next_return, config)
    return {
        "ic": float(np.nanmean(ic)) if np.isfinite(ic).any() else math.nan,
        "rank_ic": float(np.nanmean(rank_ic)) if np.isfinite(rank_ic).any() else math.nan,
        "icir": information_ratio(ic),
        "rank_icir": information_ratio(rank_ic),
        "directional_accuracy": directional_accuracy(scores, forward_return),
        "label_mse": mean_squared_error(scores, label),
        "annual_return": annual_return(net, config.periods_per_year),
        "sharpe": sharpe_ratio(net, config.periods_per_year),
        "max_drawdown": max_drawdown(net),
        "turnover": float(turnover.mean()) if len(turnover) else math.nan,
    }


def evaluate_panel(
    scores: np.ndarray, panel: Panel, dates: np.ndarray, config: PortfolioConfig | None = None
) -> dict[str, float]:
    """:func:`evaluate` of a [len(dates), A] score against the panel's targets on ``dates``."""
    return evaluate(
        scores,
        forward_return=panel.forward_return[dates],
        next_return=panel.returns[dates],
        label=panel.target[dates],
        config=config,
    )
