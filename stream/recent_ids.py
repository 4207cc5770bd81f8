"""`RecentIds`: the ids of the latest N items, to count a repeated one once in bounded memory."""

from __future__ import annotations

from collections import deque


class RecentIds:
    """Remembers the hashes of the last `capacity` distinct ids added (oldest forgotten first).

    Repeats in a stream come close together (a batch redone after an output failure, a label
    sent twice within the join wait), so the recent ones are all a de-duplication needs; an id
    repeated after `capacity` newer ones counts again. Hashes, not the strings: about 70 bytes
    an id (a 64-bit hash collision in a window of this size is negligible).

    >>> ids = RecentIds(2)
    >>> [ids.add(x) for x in ("a", "b", "a", "c", "a")]
    [True, True, False, True, True]
    >>> len(ids)
    2
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._order: deque[int] = deque()
        self._known: set[int] = set()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, item: str) -> bool:
        """True when `item` is new (it is now remembered), False when it was seen recently."""
        h = hash(item)
        if h in self._known:
            return False
        self._known.add(h)
        self._order.append(h)
        if len(self._order) > self.capacity:
            self._known.discard(self._order.popleft())
        return True
