"""Metrics by hand on tiny cases and against independent libraries (empyrical, alphalens)."""

import math

import numpy as np
import pandas as pd
import pytest

from ray_apps.models.panel import Panel
from ray_apps.training import metrics
from ray_apps.training.metrics import PortfolioConfig


def test_ic_and_rank_ic_by_hand() -> None:
    scores = np.array([[1.0, 2.0, 3.0, 4.0]])
    target = np.array([[1.0, 3.0, 2.0, 4.0]])
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): covariance 4, variances 5
    assert metrics.ic_by_date(scores, target)[0] == pytest.approx(0.8)
    assert metrics.ic_by_date(scores, target, rank=True)[0] == pytest.approx(0.8)
    # a monotone but non-linear target: rank IC 1, IC below 1
    curved = np.array([[1.0, 2.0, 3.0, 100.0]])
    assert metrics.ic_by_date(scores, curved, rank=True)[0] == pytest.approx(1.0)
    assert metrics.ic_by_date(scores, curved)[0] < 0.9


def test_ic_skips_undefined_pairs_and_thin_dates() -> None:
    scores = np.array([[1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 2.0, np.nan, np.nan, np.nan]])
    target = np.array([[2.0, 4.0, 1.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    ic = metrics.ic_by_date(scores, target)
    assert ic[0] == pytest.approx(1.0)
    assert math.isnan(ic[1])  # two pairs only


def test_rank_ic_equals_alphalens() -> None:
    from alphalens.performance import factor_information_coefficient

    rng = np.random.default_rng(3)
    dates, assets = 30, 40
    scores = rng.normal(size=(dates, assets))
    target = 0.3 * scores + rng.normal(size=(dates, assets))
    scores[rng.random((dates, assets)) < 0.1] = np.nan
    target[:, 0] = np.round(target[:, 0])  # some ties
    index = pd.MultiIndex.from_product(
        [pd.date_range("2024-01-01", periods=dates, tz="UTC"), [f"A{i}" for i in range(assets)]],
        names=["date", "asset"],
    )
    factor_data = pd.DataFrame(
        {"1D": target.ravel(), "factor": scores.ravel(), "factor_quantile": 1}, index=index
    ).dropna()
    expected = factor_information_coefficient(factor_data)["1D"].to_numpy()
    ours = metrics.ic_by_date(scores, target, rank=True)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_information_ratio_by_hand() -> None:
    series = np.array([0.1, 0.3, np.nan, 0.2])
    # mean 0.2, sample std 0.1
    assert metrics.information_ratio(series) == pytest.approx(2.0)


def test_directional_accuracy_by_hand() -> None:
    scores = np.array([[1.0, 2.0, 3.0, 4.0]])  # centred: - - + +
    target = np.array([[0.0, 5.0, 1.0, 6.0]])  # mean 3: - + - +
    assert metrics.directional_accuracy(scores, target) == pytest.approx(0.5)


def test_long_short_by_hand() -> None:
    config = PortfolioConfig(quantile=0.2, cost_bps=10.0)
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 4.0, 3.0, 2.0, 5.0]])
    log_returns = np.log(np.array([[1.02, 1.0, 1.0, 1.0, 0.99], [1.0, 1.0, 1.0, 1.0, 1.01]]))
    net, turnover = metrics.long_short_returns(scores, log_returns, config)
    # date 0: long asset 0 (+2%), short asset 4 (-1%): gross 3%, buys 2 units of weight
    # date 1: long asset 4, short asset 0: 4 units traded, gross +1% - 0%
    np.testing.assert_allclose(net, [0.03 - 2 * 0.001, 0.01 - 4 * 0.001])
    np.testing.assert_allclose(turnover, [1.0, 2.0])


def test_portfolio_figures_equal_empyrical() -> None:
    import empyrical

    rng = np.random.default_rng(11)
    returns = rng.normal(0.0005, 0.01, size=300)
    assert metrics.sharpe_ratio(returns, 252) == pytest.approx(
        empyrical.sharpe_ratio(returns, period="daily"), rel=1e-12
    )
    assert metrics.max_drawdown(returns) == pytest.approx(
        empyrical.max_drawdown(returns), rel=1e-12
    )
    assert metrics.annual_return(returns, 252) == pytest.approx(
        empyrical.annual_return(returns, period="daily"), rel=1e-12
    )
    falling = np.array([-0.1, 0.05, -0.2, 0.3])
    assert metrics.max_drawdown(falling) == pytest.approx(empyrical.max_drawdown(falling))


def test_evaluate_returns_every_metric() -> None:
    rng = np.random.default_rng(5)
    target = rng.normal(size=(40, 30))
    scores = target + rng.normal(size=(40, 30))
    result = metrics.evaluate(
        scores, forward_return=target * 0.01, next_return=target * 0.01, label=target
    )
    assert set(result) == set(metrics.METRICS)
    assert result["rank_ic"] > 0.5 and result["sharpe"] > 0


def test_ic_and_accuracy_use_the_raw_forward_return_not_the_ranked_label() -> None:
    # Two dates, four assets. The label is the per-date rank of the raw 1-bar return, so on
    # date 0 the score is linear in the label (IC 1) but not in the raw return.
    ts = pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True)
    raw = {ts[0]: [0.01, 0.02, 0.03, 0.10], ts[1]: [0.04, 0.03, 0.02, 0.01]}
    frame = pd.DataFrame(
        [
            {"symbol": s, "ts": t, "f": float(i + 1), "raw": raw[t][i]}
            for t in ts
            for i, s in enumerate("ABCD")
        ]
    )
    frame["label"] = frame.groupby("ts")["raw"].rank(pct=True)
    panel = Panel.from_frame(frame, ["f"], "label", "raw", "raw")
    scores = panel.features[:, :, 0].astype(np.float64)  # 1, 2, 3, 4 on both dates
    result = metrics.evaluate_panel(scores, panel, np.arange(2))
    # Date 0: deviations (-1.5, -.5, .5, 1.5) and (-.03, -.02, -.01, .06): covariance .14,
    # sums of squares 5 and .005. Date 1: the raw return falls linearly, IC -1.
    ic0 = 0.14 / math.sqrt(5 * 0.005)
    assert ic0 == pytest.approx(0.885438, abs=1e-6)
    assert result["ic"] == pytest.approx((ic0 - 1) / 2)  # against the label it would be 0
    assert result["icir"] == pytest.approx(((ic0 - 1) / 2) / (abs(ic0 + 1) / math.sqrt(2)))
    assert result["rank_ic"] == pytest.approx(0.0)  # ranks: 1 then -1, the same either way
    # Above the date's mean: scores C, D both dates; raw return D on date 0, A on date 1.
    # Date 0: A, B, D agree (3 of 4); date 1: none agree. Against the label: 4 then 0.
    assert result["directional_accuracy"] == pytest.approx(3 / 8)
    # label_mse is against the ranked label: (1-.25)^2 + (2-.5)^2 + (3-.75)^2 + (4-1)^2 on
    # date 0 = 16.875; date 1 label (1, .75, .5, .25): 0 + 1.5625 + 6.25 + 14.0625 = 21.875.
    assert result["label_mse"] == pytest.approx((16.875 + 21.875) / 8)
