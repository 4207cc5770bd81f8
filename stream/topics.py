"""Driftline's Kafka topics: names derived from one prefix, idempotent creation, listing.

>>> t = Topics("shop")
>>> t.events, t.models, t.resolve("alerts"), t.resolve("other.topic")
('shop.events', 'shop.models', 'shop.alerts', 'other.topic')
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

# Short name -> topic-level config. `models` is compacted: the newest event per model key wins.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "events": {},
    "labels": {},
    "predictions": {},
    "alerts": {},  # incident lifecycle events (key = incident id): what humans are paged on
    "signals": {},  # every per-signal drift alert (key = model:feature), the incidents' detail
    "models": {"cleanup.policy": "compact"},
    "dlq": {},
    "outcomes": {},  # labels joined to predictions (key = model name)
    "retrain": {},  # retrain triggers for the retrainer (key = model name)
    # The model registry's durable copy (stream/registry_log.py): compacted, never expired.
    "registry": {"cleanup.policy": "compact", "retention.ms": "-1"},
}
# replication_factor that makes the broker use its default.replication.factor (Kafka >= 2.4).
BROKER_DEFAULT = -1
# Topics whose order matters across keys get one partition, whatever `partitions` says.
TOPIC_PARTITIONS: dict[str, int] = {"registry": 1}


@dataclass(frozen=True)
class Topics:
    prefix: str

    def name(self, short: str) -> str:
        return f"{self.prefix}.{short}"

    @property
    def events(self) -> str:
        return self.name("events")

    @property
    def labels(self) -> str:
        return self.name("labels")

    @property
    def predictions(self) -> str:
        return self.name("predictions")

    @property
    def alerts(self) -> str:
        return self.name("alerts")

    @property
    def signals(self) -> str:
        return self.name("signals")

    @property
    def models(self) -> str:
        return self.name("models")

    @property
    def dlq(self) -> str:
        return self.name("dlq")

    @property
    def outcomes(self) -> str:
        return self.name("outcomes")

    @property
    def retrain(self) -> str:
        return self.name("retrain")

    @property
    def registry(self) -> str:
        return self.name("registry")

    def all(self) -> list[str]:
        return [self.name(short) for short in TOPIC_CONFIGS]

    def resolve(self, name: str) -> str:
        """Accept a short name (``alerts``) or a full topic name."""
        return self.name(name) if name in TOPIC_CONFIGS else name


@dataclass(frozen=True)
class TopicStatus:
    name: str
    partitions: int | None  # None: does not exist
    created: bool = False


def create_topics(
    admin: AdminClient,
    topics: Topics,
    partitions: int,
    replication_factor: int = BROKER_DEFAULT,
    timeout: float = 30.0,
) -> list[TopicStatus]:
    """Create every Driftline topic that is missing; existing topics are left as they are.

    `replication_factor` -1 lets the broker's ``default.replication.factor`` apply (and its
    ``min.insync.replicas``, which a topic inherits unless it sets its own)."""
    wanted = [
        NewTopic(
            topics.name(short),
            num_partitions=TOPIC_PARTITIONS.get(short, partitions),
            replication_factor=replication_factor,
            config=config,
        )
        for short, config in TOPIC_CONFIGS.items()
    ]
    created = ensure_topics(admin, wanted, timeout)
    return [
        TopicStatus(s.name, s.partitions, s.name in created)
        for s in describe_topics(admin, topics.all(), timeout)
    ]


# Errors of a create request that a retry can get past: a cluster whose metadata is still
# settling (librdkafka replaces its bootstrap broker handles by the learned ones, failing the
# requests in flight on them), a controller that moved, a broker restarting.
RETRIABLE_CREATE_ERRORS = frozenset(
    {
        "_DESTROY_BROKER",
        "_TRANSPORT",
        "_TIMED_OUT",
        "_ALL_BROKERS_DOWN",
        "NOT_CONTROLLER",
        "REQUEST_TIMED_OUT",
    }
)


def ensure_topics(admin: AdminClient, wanted: list[NewTopic], timeout: float = 30.0) -> set[str]:
    """Create those of `wanted` that are missing (existing ones are left as they are); the names
    this call created. Retried on `RETRIABLE_CREATE_ERRORS` until `timeout`."""
    created: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        existing = admin.list_topics(timeout=timeout).topics
        missing = [t for t in wanted if t.topic not in existing]
        if not missing:
            return created
        again = False
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
            except KafkaException as exc:
                code = exc.args[0].name()
                if code == "TOPIC_ALREADY_EXISTS":
                    continue  # another process created it between our listing and our request
                if code in RETRIABLE_CREATE_ERRORS and time.monotonic() < deadline:
                    again = True
                    continue
                raise
        if not again:
            return created
        time.sleep(0.5)


def describe_topics(admin: AdminClient, names: list[str], timeout: float = 30.0) -> list[TopicStatus]:
    meta: Any = admin.list_topics(timeout=timeout).topics
    return [TopicStatus(name, len(meta[name].partitions) if name in meta else None) for name in names]


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 30.0) -> None:
    existing = admin.list_topics(timeout=timeout).topics
    victims = [n for n in names if n in existing]
    if victims:
        for future in admin.delete_topics(victims, operation_timeout=timeout).values():
            future.result()


def resolved_replication_factor(admin: AdminClient, requested: int, timeout: float = 30.0) -> int:
    """`requested`, or for `BROKER_DEFAULT` the cluster's ``default.replication.factor`` (as a
    broker reports it), for clients that need a number: Faust creates its changelog topics with
    replication factor 1 unless told, and on a cluster with ``min.insync.replicas`` 2 every
    acks=all write to such a topic is refused."""
    if requested != BROKER_DEFAULT:
        return requested
    brokers = sorted(admin.list_topics(timeout=timeout).brokers)
    if not brokers:
        return 1
    resource = ConfigResource(ResourceType.BROKER, str(brokers[0]))
    configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    entry = configs.get("default.replication.factor")
    return max(1, int(entry.value)) if entry is not None and entry.value is not None else 1
