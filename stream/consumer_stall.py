"""Telling a stalled Faust partition from an idle or a busy one.

faust-streaming 0.15 can leave a source partition unconsumed after a start: its messages are
fetched (the high watermark is known) but never reach the agent and are never committed, and
nothing fetches them again, so the agent waits forever. Seen in the retrainer's restart test
on a loaded machine, where the new instance recovers its tables while an alert waits, about
once in ten runs; debug logs of passing runs show Faust fetching that partition during the
recovery and discarding the fetch at its seek, presumably the window where the failing runs
lose it. `StallWatch` gives the verdict; the retrainer's timer feeds it Faust's committed
offsets and high watermarks and re-reads a stalled partition from its committed offset (the
agents are idempotent: a redelivered incident is skipped, a redelivered outcome counted once).

A partition is stalled when messages wait on it (high watermark above the committed offset),
its committed offset has not moved for ``window`` seconds (Faust commits what its agents
processed every few seconds), and its agent is not legitimately busy (a retrain job, a
dependency outage).

>>> w = StallWatch(window=30.0)
>>> w.observe({("alerts", 0): (4, 5)}, now=0.0)
[]
>>> w.observe({("alerts", 0): (4, 5)}, now=31.0)
[('alerts', 0)]
>>> w.observe({("alerts", 0): (4, 5)}, now=32.0)  # once per window while it stays stuck
[]
>>> w.observe({("alerts", 0): (4, 5)}, now=61.0)
[('alerts', 0)]
>>> w.observe({("alerts", 0): (5, 5)}, now=62.0)  # caught up
[]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

Partition = TypeVar("Partition", bound=tuple[str, int])  # (topic, partition), e.g. Faust's TP


class StallWatch(Generic[Partition]):
    """Partitions with waiting messages and no progress for ``window`` seconds."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._busy: dict[str, int] = {}  # topic -> agents legitimately blocked on it
        self._busy_ended: dict[str, float] = {}  # topic -> when its agent was last unblocked
        self._waiting: dict[Partition, tuple[int | None, float]] = {}  # committed, since when

    @contextmanager
    def busy(self, topic: str) -> Iterator[None]:
        """``topic``'s agent is blocked on purpose (a job, an outage): no stall while inside."""
        self._busy[topic] = self._busy.get(topic, 0) + 1
        try:
            yield
        finally:
            self._busy[topic] -= 1
            self._busy_ended[topic] = self.clock()  # its backlog's window starts again

    def reset(self) -> None:
        """Forget every backlog's clock (after an outage every agent waited out)."""
        self._waiting.clear()

    def observe(
        self, offsets: Mapping[Partition, tuple[int | None, int | None]], now: float | None = None
    ) -> list[Partition]:
        """The partitions newly found stalled, given each one's (committed, high watermark)."""
        now = self.clock() if now is None else now
        stalled: list[Partition] = []
        for tp, (committed, highwater) in offsets.items():
            if highwater is None or highwater <= (committed or 0):
                self._waiting.pop(tp, None)
                continue
            prev = self._waiting.get(tp)
            if prev is None or prev[0] != committed:  # new backlog, or progress: the clock restarts
                self._waiting[tp] = (committed, now)
                continue
            quiet = now - max(prev[1], self._busy_ended.get(tp[0], prev[1]))
            if quiet >= self.window and not self._busy.get(tp[0]):
                self._waiting[tp] = (committed, now)  # reported: again after another window
                stalled.append(tp)
        for tp in set(self._waiting) - set(offsets):  # revoked
            del self._waiting[tp]
        return stalled
