"""The entity states a writer stored last, kept in its memory so the next batch need not read them.

`OnlineStore.write_batch` reads every entity's state from Redis, applies the batch and writes the
states back. Its entities mostly come back in the next batches, so a writer that remembers what
it wrote can skip most of those reads (and their decoding): a third of a batch's Redis bytes.

**Why a cached state is right.** The store fences writes with a per-(source, partition) offset
watermark that only ever grows, and an entity's events come from one partition. An entry is
used only while the partition's watermark in Redis is still the one this process wrote along
with it: then nobody else has written the partition since, so its entities' states in Redis are
the ones cached. The batch's first round trip reads the watermarks anyway; any partition whose
watermark moved (another worker took it over for a while, or a write of ours failed after
``EXEC`` reached Redis) drops all its entries at once (a generation number per partition) and
those states are read from Redis as before. An entry older than the TTL (by wall time) is not
used either, as Redis may have expired the entity. So a cache hit and a Redis read give the
same state, bit for bit, and the cache changes no feature: it is only faster.

Memory: ``capacity`` states of `Engine.width` float64 words (2.6 kB each for
`fraud_feature_view`, so 10,000 entities take 26 MB), least recently used first out.

>>> import numpy as np
>>> cache = StateCache(width=3, capacity=2)
>>> cache.store("events", ["a", "b"], [0, 0], np.arange(6.0).reshape(2, 3), [[], []], [1, 1], {0: 41})
>>> cache.valid("events", {0: 41})  # the watermark is still ours: entries of partition 0 hold
set()
>>> hit, rows, _ = cache.lookup("events", ["b", "c"], np.array([0, 0]), now_ms=2, ttl_ms=10)
>>> hit.tolist(), rows.tolist()
([True, False], [[3.0, 4.0, 5.0]])
>>> cache.valid("events", {0: 57})  # someone else wrote partition 0: its entries are dropped
{0}
>>> cache.lookup("events", ["b"], np.array([0]), now_ms=2, ttl_ms=10)[0].tolist()
[False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["StateCache"]


class StateCache:
    """Entity states (rows of `Engine.width` words) by entity id, valid per (source, partition).

    Vectorised: a dict maps an entity to its slot, everything else is numpy arrays by slot (its
    state row, source and partition, their generation when stored, TTL time, last use), so a
    batch's lookups and stores cost one dict access per entity.
    """

    def __init__(self, width: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.rows = np.empty((0, width))  # grown on demand, up to capacity
        self._slot: dict[str, int] = {}
        self._entity: list[str | None] = []  # by slot
        self._tails: list[list[str | None]] = []
        self._key = np.zeros(0, dtype=np.int64)  # (source, partition) id
        self._gen = np.zeros(0, dtype=np.int64)  # generation of that key when stored
        self._ttl_at = np.zeros(0, dtype=np.int64)
        self._used = np.zeros(0, dtype=np.int64)  # tick of the last lookup or store
        self._tick = 0
        self._keys: dict[tuple[str, int], int] = {}  # (source, partition) -> id
        self._marks: dict[int, int] = {}  # key id -> the watermark written with its entries
        self._generation: list[int] = []  # by key id

    def __len__(self) -> int:
        return len(self._slot)

    def _key_id(self, source: str, partition: int) -> int:
        k = self._keys.get((source, partition))
        if k is None:
            k = self._keys[source, partition] = len(self._generation)
            self._generation.append(0)
        return k

    def valid(self, source: str, watermarks: Mapping[int, int | None]) -> set[int]:
        """Check the partitions' watermarks as read from Redis; drop the entries of every
        partition whose watermark is not the one written with them, and return those."""
        stale = set()
        for p, mark in watermarks.items():
            k = self._keys.get((source, p))
            if k is not None and k in self._marks and self._marks[k] != mark:
                self.drop(source, [p])
                stale.add(p)
        return stale

    def drop(self, source: str, partitions: Sequence[int]) -> None:
        """Forget every entry of these partitions (the next lookups read them from Redis)."""
        for p in partitions:
            k = self._key_id(source, p)
            self._marks.pop(k, None)
            self._generation[k] += 1

    def lookup(
        self, source: str, entities: Sequence[str], partitions: np.ndarray, now_ms: int, ttl_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which entities (of ``partitions[i]``) have a usable entry; their states (copies) and
        when their TTLs were set, in order."""
        get = self._slot.get
        slots = np.fromiter((get(e, -1) for e in entities), dtype=np.int64, count=len(entities))
        known = slots >= 0
        ids = np.array(
            [self._keys.get((source, p), -1) for p in partitions.tolist()] if known.any() else [],
            dtype=np.int64,
        )
        hit = known.copy()
        if hit.any():
            s = slots[hit]
            gen = np.asarray([*self._generation, 0], dtype=np.int64)  # id -1: never valid
            marked = np.array([k in self._marks for k in ids[hit].tolist()], dtype=bool)
            hit[hit] = (
                marked
                & (self._key[s] == ids[hit])
                & (self._gen[s] == gen[ids[hit]])
                & (now_ms - self._ttl_at[s] < ttl_ms)
            )
        self._tick += 1
        self._used[slots[hit]] = self._tick
        return hit, self.rows[slots[hit]], self._ttl_at[slots[hit]]

    def tails(self, entity: str) -> list[str | None]:
        return self._tails[self._slot[entity]]

    def store(
        self,
        source: str,
        entities: Sequence[str],
        partitions: Sequence[int],
        states: np.ndarray,
        tails: Sequence[list[str | None]],
        ttl_at: Sequence[int],
        watermarks: Mapping[int, int],
    ) -> None:
        """Remember states just made durable in Redis along with these partition watermarks."""
        for p, mark in watermarks.items():
            self._marks[self._key_id(source, p)] = mark
        if len(entities) > self.capacity:  # only the last ones fit
            cut = len(entities) - self.capacity
            entities, partitions, states = entities[cut:], partitions[cut:], states[cut:]
            tails, ttl_at = tails[cut:], ttl_at[cut:]
        get = self._slot.get
        slots = np.fromiter((get(e, -1) for e in entities), dtype=np.int64, count=len(entities))
        new = np.flatnonzero(slots < 0)
        if len(new):
            slots[new] = self._allocate(len(new), protect=slots[slots >= 0])
            for i, slot in zip(new.tolist(), slots[new].tolist(), strict=True):
                self._slot[entities[i]] = slot
                self._entity[slot] = entities[i]
        ids = np.array([self._key_id(source, p) for p in partitions], dtype=np.int64)
        self.rows[slots] = states
        self._key[slots] = ids
        self._gen[slots] = np.asarray(self._generation, dtype=np.int64)[ids]
        self._ttl_at[slots] = ttl_at
        self._tick += 1
        self._used[slots] = self._tick
        store_tails = self._tails
        for slot, t in zip(slots.tolist(), tails, strict=True):
            store_tails[slot] = t

    def _allocate(self, k: int, protect: np.ndarray) -> np.ndarray:
        """k free slots: unused ones first, then grown, then the least recently used evicted."""
        size = len(self.rows)
        free = np.flatnonzero(self._used[:size] < 0)[:k]
        if len(free) < k and size < self.capacity:
            grow = min(self.capacity, max(1024, 2 * size, size + k)) - size
            self._grow(grow)
            free = np.concatenate([free, np.arange(size, size + grow)])[:k]
        if len(free) < k:
            used = self._used.copy()
            used[free] = np.iinfo(np.int64).max
            used[protect] = np.iinfo(np.int64).max
            evict = np.argpartition(used, k - len(free) - 1)[: k - len(free)]
            for slot in evict.tolist():
                old = self._entity[slot]
                if old is not None:
                    del self._slot[old]
            free = np.concatenate([free, evict])
        self._used[free] = self._tick
        return free

    def _grow(self, extra: int) -> None:
        width = self.rows.shape[1]
        self.rows = np.concatenate([self.rows, np.empty((extra, width))])
        self._key = np.concatenate([self._key, np.full(extra, -1, dtype=np.int64)])
        self._gen = np.concatenate([self._gen, np.zeros(extra, dtype=np.int64)])
        self._ttl_at = np.concatenate([self._ttl_at, np.zeros(extra, dtype=np.int64)])
        self._used = np.concatenate([self._used, np.full(extra, -1, dtype=np.int64)])
        self._entity += [None] * extra
        self._tails += [[] for _ in range(extra)]
