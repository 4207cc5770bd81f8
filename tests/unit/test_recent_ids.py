"""`RecentIds`: a repeat within the window counts once, and memory stays at its capacity."""

from __future__ import annotations

import pytest

from stream.recent_ids import RecentIds


def test_repeats_within_the_window_are_known_and_older_ids_are_forgotten() -> None:
    ids = RecentIds(1000)
    assert all(ids.add(f"e{i}:fraud:1:production") for i in range(5000))
    assert len(ids) == 1000
    assert not any(ids.add(f"e{i}:fraud:1:production") for i in range(4000, 5000))  # recent: repeats
    assert ids.add("e0:fraud:1:production")  # 5,000 ids ago: forgotten, new again
    assert len(ids) == 1000


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
