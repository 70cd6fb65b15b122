"""Splitting the symbols of a feature run into groups of whole symbols."""

import itertools

import pytest

from ray_apps.features.sources import partition


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_partition_gives_consecutive_balanced_groups(parts: int) -> None:
    counts = {f"S{i:03d}": 100 + (i * 37) % 61 for i in range(40)}
    groups = partition(counts, parts, max_rows=10_000)
    assert list(itertools.chain(*groups)) == sorted(counts)  # every symbol once, in order
    assert len(groups) == min(parts, len(counts))
    sizes = [sum(counts[s] for s in group) for group in groups]
    target = sum(counts.values()) / len(groups)
    biggest = max(counts.values())
    assert all(abs(size - target) <= biggest for size in sizes), sizes


def test_partition_splits_to_respect_max_rows() -> None:
    counts = {f"S{i}": 1_000 for i in range(10)}
    groups = partition(counts, 1, max_rows=2_500)
    # 4 groups of 2,500 rows; each cut falls at the symbol whose middle crosses a share
    assert [len(g) for g in groups] == [3, 2, 3, 2]


def test_partition_keeps_a_large_symbol_whole() -> None:
    groups = partition({"A": 10, "B": 5_000, "C": 10}, 3, max_rows=100)
    assert groups == [["A"], ["B"], ["C"]]
