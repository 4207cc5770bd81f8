"""StallWatch: a backlog with no progress for a window is a stall; idle, busy or moving ones are not."""

from __future__ import annotations

from stream.consumer_stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_backlog_that_does_not_move_for_the_window_is_a_stall() -> None:
    clock = Clock()
    w: StallWatch[tuple[str, int]] = StallWatch(window=30.0, clock=clock)
    tp = ("alerts", 4)
    assert w.observe({tp: (4, 5)}) == []
    clock.now = 29.0
    assert w.observe({tp: (4, 5)}) == []
    clock.now = 30.0
    assert w.observe({tp: (4, 5)}) == [tp]
    clock.now = 31.0
    assert w.observe({tp: (4, 5)}) == []  # once per window
    clock.now = 60.0
    assert w.observe({tp: (4, 5)}) == [tp]  # still stuck after the re-read: again


def test_progress_idle_and_caught_up_partitions_are_not_stalls() -> None:
    clock = Clock()
    w: StallWatch[tuple[str, int]] = StallWatch(window=10.0, clock=clock)
    moving, idle, fresh = ("outcomes", 0), ("outcomes", 1), ("outcomes", 2)
    for step in range(10):
        clock.now = step * 5.0
        # moving: committed advances each look; idle: nothing waits; fresh: nothing fetched yet
        assert w.observe({moving: (step, step + 50), idle: (7, 7), fresh: (None, None)}) == []


def test_a_partition_never_committed_counts_from_zero() -> None:
    clock = Clock()
    w: StallWatch[tuple[str, int]] = StallWatch(window=10.0, clock=clock)
    tp = ("retrain", 0)
    w.observe({tp: (None, 3)})
    clock.now = 10.0
    assert w.observe({tp: (None, 3)}) == [tp]
    assert w.observe({("retrain", 1): (None, 0)}) == []


def test_a_busy_agent_is_no_stall_and_its_window_restarts_when_it_is_done() -> None:
    clock = Clock()
    w: StallWatch[tuple[str, int]] = StallWatch(window=10.0, clock=clock)
    tp = ("retrain", 4)
    w.observe({tp: (3, 4)})
    with w.busy("retrain"):  # a retrain job: the trigger behind it waits
        clock.now = 100.0
        assert w.observe({tp: (3, 4)}) == []
    clock.now = 105.0
    assert w.observe({tp: (3, 4)}) == []  # 5 s since the job ended
    clock.now = 110.0
    assert w.observe({tp: (3, 4)}) == [tp]
    assert w.observe({("alerts", 4): (0, 1)}) == []  # another topic is not affected by the busy one


def test_reset_and_revocation_forget_the_clocks() -> None:
    clock = Clock()
    w: StallWatch[tuple[str, int]] = StallWatch(window=10.0, clock=clock)
    a, b = ("alerts", 0), ("alerts", 1)
    w.observe({a: (0, 1), b: (0, 1)})
    clock.now = 5.0
    w.observe({a: (0, 1)})  # b revoked
    w.reset()  # e.g. Redis was down: every agent waited
    clock.now = 12.0
    assert w.observe({a: (0, 1), b: (0, 1)}) == []
    clock.now = 22.0
    assert sorted(w.observe({a: (0, 1), b: (0, 1)})) == [a, b]
