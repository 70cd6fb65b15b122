import random

import pytest

from ray_apps.serving.routing import CHALLENGER, CHAMPION, ChallengerGuard, route


def test_weights_zero_and_one_are_exact():
    draw = random.Random(1)
    assert {route(0.0, None, draw) for _ in range(200)} == {CHAMPION}
    assert {route(1.0, None, draw) for _ in range(200)} == {CHALLENGER}


@pytest.mark.parametrize("weight", [0.05, 0.3, 0.5])
def test_the_challenger_share_is_the_weight_within_a_binomial_bound(weight):
    draw, n = random.Random(7), 20_000
    hits = sum(route(weight, None, draw) == CHALLENGER for _ in range(n))
    assert abs(hits - n * weight) < 4 * (n * weight * (1 - weight)) ** 0.5


def test_a_client_key_always_gets_the_same_version_and_keys_split_by_weight():
    keys = [f"client-{i}" for i in range(4000)]
    first = [route(0.25, key) for key in keys]
    assert first == [route(0.25, key, random.Random(3)) for key in keys]
    share = first.count(CHALLENGER) / len(keys)
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / len(keys)) ** 0.5


def test_raising_the_weight_only_moves_clients_to_the_challenger():
    keys = [f"k{i}" for i in range(2000)]
    low = {key for key in keys if route(0.1, key) == CHALLENGER}
    high = {key for key in keys if route(0.4, key) == CHALLENGER}
    assert low < high


def test_the_guard_judges_only_a_full_window_and_trips_above_the_error_rate():
    guard = ChallengerGuard(window=10, max_error_rate=0.2)
    assert not any(guard.record(False, 1.0) for _ in range(9))  # 9 failures: not judged yet
    assert guard.record(False, 1.0)
    guard.reset()
    outcomes = [guard.record(ok, 1.0) for ok in [True, True, False, False] + [True] * 6]
    assert outcomes == [False] * 10  # 2 of 10 is the limit, not above it
    assert guard.record(False, 1.0)  # the window slides: 3 of the last 10


def test_the_guard_counts_slow_requests_as_bad():
    guard = ChallengerGuard(window=4, max_error_rate=0.5, max_latency_ms=25.0)
    results = [guard.record(True, ms) for ms in (10.0, 30.0, 24.0, 40.0)]
    assert results == [False, False, False, False]  # 2 of 4 slow: at the limit
    assert guard.record(True, 26.0)  # 3 of the last 4
