"""What a test prefix leaves on the shared stack, and deleting it.

Everything a test creates is named by its prefix: topics ``<prefix>.events`` and Faust's
``<prefix>-retrainer-...-changelog`` / ``-__assignor-__leader``, consumer groups
``<prefix>-worker`` / ``<prefix>-retrainer``, Redis keys ``<prefix>:...``. A name belongs to a
prefix when it is the prefix or continues it after a separator, so ``test-1-ab`` is not swept
with ``test-1-a``.
"""

from __future__ import annotations

import time
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
        found = self.redis.scan_iter(match=f"{prefix}*", count=5000)
        return [k for k in found if owned(k.decode(errors="replace"), prefix)]

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

    def count(self, prefix: str) -> Footprint:
        return Footprint(len(self._keys(prefix)), len(self._topics(prefix)), len(self._groups(prefix)))

    def purge(self, prefix: str, group_wait: float = 0.0) -> Footprint:
        """Delete everything of ``prefix``; what was deleted. A group with members left (a worker
        SIGKILLed less than a session timeout ago) cannot be deleted yet: it is retried for
        ``group_wait`` seconds, else left for a later sweep."""
        keys = self._keys(prefix)
        for start in range(0, len(keys), 1000):
            self.redis.unlink(*keys[start : start + 1000])
        groups = self._delete_groups(prefix, group_wait)
        topics = self._topics(prefix)
        if topics:
            for future in self.admin.delete_topics(topics, operation_timeout=30).values():
                try:
                    future.result()
                except KafkaException as exc:
                    if "UNKNOWN_TOPIC" not in str(exc):
                        raise
        return Footprint(len(keys), len(topics), groups)

    def _delete_groups(self, prefix: str, wait: float) -> int:
        deleted = 0
        deadline = time.monotonic() + wait
        while groups := self._groups(prefix):
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
