"""Walk-forward splits never leak: a property test over many shapes, and the errors."""

import numpy as np
import pytest

from ray_apps.errors import UserError
from ray_apps.training.splits import SplitConfig, walk_forward


def test_splits_never_leak_over_many_shapes() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(2_000):
        n = int(rng.integers(20, 800))
        horizon = int(rng.integers(1, 15))
        config = SplitConfig(
            test_fraction=float(rng.uniform(0.05, 0.4)),
            val_fraction=float(rng.uniform(0.05, 0.45)),
            folds=int(rng.integers(1, 5)),
            gap=None if rng.random() < 0.5 else horizon + int(rng.integers(0, 5)),
        )
        try:
            split = walk_forward(n, horizon, config)
        except UserError:
            continue  # too few dates for this shape
        except ValueError:
            continue  # fractions leave nothing to train on
        checked += 1
        test = split.test
        assert test[-1] == n - 1 and np.all(np.diff(test) == 1)  # the tail, contiguous
        assert split.final_train[-1] + horizon < test[0]
        for fold in split.folds:
            assert len(fold.train) and len(fold.val)
            # a training label looks `horizon` dates ahead: it must end before validation
            assert fold.train[-1] + horizon < fold.val[0]
            assert fold.val[-1] + horizon < test[0]
            assert not set(fold.train) & set(fold.val)
            assert not (set(fold.train) | set(fold.val)) & set(test)
        starts = [fold.val[0] for fold in split.folds]
        assert starts == sorted(starts)
    assert checked > 500


def test_split_layout_by_hand() -> None:
    split = walk_forward(100, 5, SplitConfig(test_fraction=0.2, val_fraction=0.2, folds=2))
    assert (split.test[0], split.test[-1]) == (80, 99)
    assert [(f.val[0], f.val[-1]) for f in split.folds] == [(55, 64), (65, 74)]
    assert [f.train[-1] for f in split.folds] == [49, 59]
    assert split.final_train[-1] == 74


def test_gap_shorter_than_horizon_is_refused() -> None:
    with pytest.raises(UserError, match=r"split.gap: 2 dates is shorter than the label horizon"):
        walk_forward(100, 5, SplitConfig(gap=2))


def test_too_few_dates_is_refused() -> None:
    with pytest.raises(UserError, match="too few"):
        walk_forward(12, 5, SplitConfig(folds=3))
