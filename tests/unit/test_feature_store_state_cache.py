"""The state cache: which entries a lookup may use, and least-recently-used eviction."""

from __future__ import annotations

import numpy as np

from feature_store.state_cache import StateCache


def _rows(*values: float) -> np.ndarray:
    return np.array([[v, v] for v in values])


def test_entries_are_valid_per_source_partition_and_watermark() -> None:
    cache = StateCache(width=2, capacity=10)
    cache.store("a", ["x", "y"], [0, 1], _rows(1, 2), [["p"], ["q"]], [5, 5], {0: 10, 1: 20})
    hit, rows, ttl_at = cache.lookup("a", ["x", "y", "z"], np.array([0, 1, 0]), now_ms=6, ttl_ms=100)
    assert hit.tolist() == [True, True, False] and rows[:, 0].tolist() == [1, 2]
    assert cache.tails("y") == ["q"] and ttl_at.tolist() == [5, 5]
    # Another source, another partition, or an entry older than the TTL: not used.
    assert not cache.lookup("b", ["x"], np.array([0]), 6, 100)[0].any()
    assert not cache.lookup("a", ["x"], np.array([1]), 6, 100)[0].any()
    assert not cache.lookup("a", ["x"], np.array([0]), 105, 100)[0].any()
    # A moved watermark drops its partition's entries only.
    assert cache.valid("a", {0: 11, 1: 20}) == {0}
    hit, _, _ = cache.lookup("a", ["x", "y"], np.array([0, 1]), 6, 100)
    assert hit.tolist() == [False, True]
    # Stored again with the new watermark, the entry is valid again.
    cache.store("a", ["x"], [0], _rows(3), [["p"]], [5], {0: 12})
    hit, rows, _ = cache.lookup("a", ["x"], np.array([0]), 6, 100)
    assert hit.tolist() == [True] and rows[0, 0] == 3
    assert cache.valid("a", {0: 12, 1: 20}) == set()


def test_the_least_recently_used_entries_go_first() -> None:
    cache = StateCache(width=2, capacity=3)
    marks = {0: 1}
    cache.store("a", ["e1", "e2", "e3"], [0, 0, 0], _rows(1, 2, 3), [[], [], []], [0, 0, 0], marks)
    cache.lookup("a", ["e1"], np.array([0]), 0, 10)  # e1 used again: e2 is now the oldest
    cache.store("a", ["e4"], [0], _rows(4), [[]], [0], marks)
    hit, rows, _ = cache.lookup("a", ["e1", "e2", "e3", "e4"], np.zeros(4, dtype=np.int64), 0, 10)
    assert hit.tolist() == [True, False, True, True] and rows[:, 0].tolist() == [1, 3, 4]
    assert len(cache) == 3
    # More entities in one store than the capacity: the last ones are kept.
    many = [f"m{i}" for i in range(5)]
    cache.store("a", many, [0] * 5, _rows(*range(5)), [[]] * 5, [0] * 5, marks)
    hit, rows, _ = cache.lookup("a", many, np.zeros(5, dtype=np.int64), 0, 10)
    assert hit.tolist() == [False, False, True, True, True] and rows[:, 0].tolist() == [2, 3, 4]


def test_growing_keeps_every_entry() -> None:
    cache = StateCache(width=1, capacity=5000)
    for start in range(0, 3000, 500):
        names = [f"e{i}" for i in range(start, start + 500)]
        cache.store(
            "a", names, [0] * 500, np.arange(start, start + 500.0)[:, None], [[]] * 500, [0] * 500, {0: 1}
        )
    names = [f"e{i}" for i in range(3000)]
    hit, rows, _ = cache.lookup("a", names, np.zeros(3000, dtype=np.int64), 0, 10)
    assert hit.all() and rows[:, 0].tolist() == list(range(3000)) and len(cache.rows) >= 3000
