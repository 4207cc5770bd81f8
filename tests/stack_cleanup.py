"""What a test prefix leaves on the shared stack, and deleting it.

Everything a test creates is named by its prefix: topics ``<prefix>.events`` and Faust's
``<prefix>-retrainer-...-changelog`` / ``-__assignor-__leader``, consumer groups
``<prefix>-worker`` / ``<prefix>-retrainer``, Redis keys ``<prefix>:...``. A name belongs to a
prefix when it is the prefix or continues it after a separator, so ``test-1-ab`` is not swept
with ``test-1-a``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from driftline.settings import Settings

SEPARATORS = ".:-_"


def owned(name: str, prefix: str) -> bool:
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] in SEPARATORS)


@dataclass
class Footprint:
    """Redis keys, topics and consumer groups of a prefix."""

    keys: int = 0
    topics: int = 0
    groups: int = 0

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        return f"{self.keys} Redis keys, {self.topics} topics, {self.groups} consumer groups"


class StackSweeper:
    """Counts and deletes a prefix's keys, topics and groups on one Kafka + Redis."""

    def __init__(self, s: Settings) -> None:
        self.admin = AdminClient(s.kafka_client_config())
        self.redis = redis.Redis.from_url(s.redis_url, socket_timeout=30, socket_connect_timeout=5)

    def close(self) -> None:
        self.redis.close()

    def _keys(self, prefix: str) -> list[bytes]:
        # Keys of a hash-tagged family start with "{<prefix>" (driftline.redis_keys).
        found = [
            *self.redis.scan_iter(match=f"{prefix}*", count=5000),
            *self.redis.scan_iter(match=f"{{{prefix}*", count=5000),
        ]
        return [k for k in found if owned(k.decode(errors="replace").removeprefix("{"), prefix)]

    def _topics(self, prefix: str) -> list[str]:
        return [t for t in self.admin.list_topics(timeout=30).topics if owned(t, prefix)]

    def _groups(self, prefix: str) -> list[str]:
        listed = self.admin.list_consumer_groups(request_timeout=30).result()
        return [g.group_id for g in listed.valid if owned(g.group_id, prefix)]

    def size(self, timeout: float = 30) -> Footprint:
        """The whole stack: every key, topic and group, whoever made them."""
        groups = self.admin.list_consumer_groups(request_timeout=timeout).result(timeout)
        topics = self.admin.list_topics(timeout=timeout).topics
        return Footprint(int(self.redis.dbsize()), len(topics), len(groups.valid))

    def count(self, prefix: str, settle: float = 0.0) -> Footprint:
        """What ``prefix`` still has. `settle`: seconds to let topics just deleted drop out of the
        broker's metadata (a deletion is acknowledged before every listing stops showing it)."""
        deadline = time.monotonic() + settle
        while (topics := self._topics(prefix)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return Footprint(len(self._keys(prefix)), len(topics), len(self._groups(prefix)))

    def purge(self, prefix: str, group_wait: float = 0.0) -> Footprint:
        """Delete everything of ``prefix``; what was deleted. A group with members left (a worker
        SIGKILLed less than a session timeout ago) cannot be deleted yet: it is retried for
        ``group_wait`` seconds, else left for a later sweep."""
        return self.purge_many([prefix], prefix, group_wait)

    def purge_many(self, prefixes: Sequence[str], scope: str, group_wait: float = 0.0) -> Footprint:
        """`purge` of every prefix in ``prefixes`` (each continues ``scope``) with one pass over
        the keyspace: a SCAN reads every key of the database (a second or more per million keys,
        whoever wrote them), so it is done once for all of them."""
        mine = tuple(prefixes)

        def ours(name: str) -> bool:
            return name.startswith(mine) and any(owned(name, p) for p in mine)

        keys = [k for k in self._keys(scope) if ours(k.decode(errors="replace").removeprefix("{"))]
        for start in range(0, len(keys), 1000):
            self.redis.unlink(*keys[start : start + 1000])
        groups = self._delete_groups(scope, group_wait, ours)
        topics = [t for t in self._topics(scope) if ours(t)]
        if topics:
            for future in self.admin.delete_topics(topics, operation_timeout=30).values():
                try:
                    future.result()
                except KafkaException as exc:
                    if "UNKNOWN_TOPIC" not in str(exc):
                        raise
        return Footprint(len(keys), len(topics), groups)

    def _delete_groups(self, prefix: str, wait: float, ours: Callable[[str], bool] | None = None) -> int:
        deleted = 0
        deadline = time.monotonic() + wait
        while groups := [g for g in self._groups(prefix) if ours is None or ours(g)]:
            for future in self.admin.delete_consumer_groups(groups, request_timeout=30).values():
                try:
                    future.result()
                    deleted += 1
                except KafkaException:
                    pass  # NON_EMPTY_GROUP: a member has not timed out yet
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        return deleted


class BackgroundPurge:
    """Purges finished tests' prefixes in a thread, off the tests' own time: every prefix finished
    since the last pass in one `StackSweeper.purge_many` (one keyspace SCAN), at most one pass
    every ``interval`` seconds. `close` purges what is left and waits for it.

    A pass that fails (the stack not answering) is counted in ``failures``; its prefixes are left
    to the session's final sweep of ``scope``, which deletes whatever a test left."""

    def __init__(
        self, sweeper: StackSweeper, scope: str, record: Callable[[Footprint], None], interval: float = 10.0
    ) -> None:
        self.sweeper, self.scope, self.record, self.interval = sweeper, scope, record, interval
        self.failures = 0
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._wake, self._closing = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-purge", daemon=True)
        self._thread.start()

    def submit(self, prefixes: Sequence[str]) -> None:
        with self._lock:
            self._pending += prefixes
        self._wake.set()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    self.record(self.sweeper.purge_many(batch, self.scope))
                except Exception:
                    self.failures += 1
            if self._closing.is_set():
                with self._lock:
                    if not self._pending:
                        return
                continue
            self._closing.wait(self.interval)  # gather the next tests' prefixes into one pass
