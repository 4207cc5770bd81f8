"""Dependency outages (Kafka, Redis): wait them out instead of crashing, say so once.

Every long-running process (worker, outcome joiner, retrainer, API) keeps one `Dependency` per
service it needs. A failure that means "the service is unreachable" (`outage_of`) marks it down:
one log line with the service and its address, the gauge ``driftline_dependency_up{dependency}``
at 0, and retries spaced by capped exponential backoff with full jitter. The first success marks
it up again: one more line, the gauge at 1. Nothing is logged per retry.

`wait_out` is the consumer side, shared by the worker and the joiner: a batch whose work hit an
outage is not committed; its partitions are paused (the consumer is still polled, so the process
keeps its group membership), the dependency is probed until it answers, then the partitions are
resumed and rewound to the batch's first offsets, so the batch is read and done again.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, cast

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Gauge

from stream.offsets import first_offsets

log = logging.getLogger("driftline.dependency")

Name = Literal["kafka", "redis"]

# Kafka errors that say "no broker/coordinator answers now" rather than "this request is wrong".
_KAFKA_OUTAGE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._RESOLVE,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.BROKER_NOT_AVAILABLE,
    }
)


def kafka_error_is_outage(err: KafkaError) -> bool:
    """A non-fatal Kafka error that a broker coming back cures."""
    if err.fatal():
        return False
    return err.code() in _KAFKA_OUTAGE or err.retriable() or err.txn_requires_abort()


# Redis replies that mean "not now": loading its data, or a Redis Cluster moving a slot or
# failing a master over (the feature store re-reads the slot map before its next batch).
_REDIS_UNAVAILABLE = ("LOADING", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


def outage_of(exc: BaseException) -> Name | None:
    """Which dependency `exc` says is unreachable (None: a real error, not an outage).

    Redis: redis-py's connection errors and timeouts (a server loading its AOF after a restart
    included), and the raw socket errors of the feature store's own protocol code. Kafka: a
    `KafkaException` with a non-fatal transport, coordinator or timeout error.
    """
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "redis"
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(_REDIS_UNAVAILABLE):
        return "redis"  # the feature store's own parser turns -LOADING (etc.) into a ResponseError
    if isinstance(exc, redis.exceptions.ClusterError | redis.exceptions.RedisClusterException):
        return "redis"  # no master for a slot yet (a failover), or no node answers
    if isinstance(exc, ConnectionError | socket.timeout | TimeoutError):
        return "redis"  # only Redis is spoken to over plain sockets
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return "kafka" if kafka_error_is_outage(exc.args[0]) else None
    return None


def redo_after(exc: BaseException) -> Name | None:
    """The dependency to wait for before redoing a batch that raised `exc` (None: a real error).

    An outage (`outage_of`), or a transactional producer left in a fatal state by a broker
    restart (``INVALID_TXN_STATE``, a fenced epoch): `reset_transaction` replaces that producer.
    """
    name = outage_of(exc)
    if name is None and isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.fatal():
            return "kafka"
    return name


def dependency_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "driftline_dependency_up",
        "1 while the dependency answers, 0 while this process waits for it",
        ["dependency"],
        registry=registry,
    )


class Dependency:
    """The up/down state of one service, its gauge, its backoff, and its state-change log lines."""

    def __init__(
        self,
        name: Name,
        address: str,
        gauge: Gauge | None = None,
        probe: Callable[[], object] | None = None,
        initial_delay: float = 0.2,
        max_delay: float = 5.0,
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self.address = address
        self.probe = probe  # a cheap call that raises while the service is unreachable
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.log = logger
        self._gauge = gauge.labels(name) if gauge is not None else None
        self._lock = threading.Lock()  # marked from callbacks and helper threads too
        self._up = True
        self._down_since = 0.0
        self._attempt = 0
        if self._gauge is not None:
            self._gauge.set(1)

    @property
    def up(self) -> bool:
        return self._up

    def down(self, exc: BaseException | str) -> None:
        """The service failed us: the first call after it was up logs and drops the gauge."""
        with self._lock:
            if not self._up:
                return
            self._up, self._down_since, self._attempt = False, time.monotonic(), 0
        if self._gauge is not None:
            self._gauge.set(0)
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.log.warning(
            "%s at %s is unreachable (%s); waiting for it, retrying with backoff",
            self.name,
            self.address,
            why,
        )

    def recovered(self) -> None:
        """The service answered: the first call after it was down logs and raises the gauge."""
        with self._lock:
            if self._up:
                return
            self._up, self._attempt = True, 0
            downtime = time.monotonic() - self._down_since
        if self._gauge is not None:
            self._gauge.set(1)
        self.log.warning("%s at %s is back after %.1f s; resuming", self.name, self.address, downtime)

    def on_kafka_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb``: "all brokers down" and the like mark Kafka down."""
        if kafka_error_is_outage(err):
            self.down(err.str())

    def next_delay(self) -> float:
        """The wait before the next retry: capped exponential backoff, full jitter."""
        with self._lock:
            ceiling = min(self.max_delay, self.initial_delay * 2**self._attempt)
            self._attempt = min(self._attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)

    def ensure(self) -> bool:
        """Probe once: True (and marked up) if the service answers; its error (marked down) if not."""
        if self.probe is None:
            return True
        try:
            self.probe()
        except (redis.RedisError, KafkaException, OSError) as exc:
            self.down(exc)
            raise
        self.recovered()
        return True

    def check(self) -> bool:
        """Probe once: True if the service answers, False (marked down) if not."""
        try:
            return self.ensure()
        except (redis.RedisError, KafkaException, OSError):
            return False

    def wait(self, should_stop: Callable[[], bool], idle: Callable[[float], object] = time.sleep) -> bool:
        """Probe with backoff until the service answers (True) or `should_stop` (False).

        ``idle(seconds)`` is what to do between probes: sleep, or poll a paused consumer.
        """
        while not should_stop():
            if self.check():
                return True
            idle(self.next_delay())
        return False


def call_with_retry(
    deps: Mapping[Name, Dependency], fn: Callable[[], object], should_stop: Callable[[], bool] = lambda: False
) -> object:
    """``fn()``, retried with backoff while it fails on an outage of one of `deps` (any other
    error is raised). Marks the dependency down on the first failure and up on success."""
    while True:
        try:
            result = fn()
        except Exception as exc:
            name = outage_of(exc)
            if name is None or name not in deps or should_stop():
                raise
            dep = deps[name]
            dep.down(exc)
            time.sleep(dep.next_delay())
            continue
        for dep in deps.values():
            dep.recovered()
        return result


def abort_open_transaction(producer: Producer, timeout: float = 10) -> bool:
    """Abort the transaction a failed batch may have left open: True when none is open any more,
    False while the broker does not answer (try again once it is back); other errors are raised."""
    try:
        producer.abort_transaction(timeout)
        return True
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() == KafkaError._STATE:
            return True  # no transaction was open
        if kafka_error_is_outage(err) and err.code() != KafkaError._CONFLICT:
            return False
        raise


def wait_out(
    consumer: Consumer,
    deps: Mapping[Name, Dependency],
    name: Name,
    should_stop: Callable[[], bool],
    settle: Callable[[], object] | None = None,
    max_messages: int = 500,
) -> None:
    """Pause consuming, wait for dependency `name`, `settle` (e.g. end the open transaction),
    then resume and rewind every owned partition to its committed offset.

    The consumer is polled between probes (nothing comes from paused partitions), so its group
    membership and rebalance callbacks stay alive through a long outage; messages of partitions
    assigned meanwhile are dropped and those partitions paused too. Rewinding to the *committed*
    offsets (not to the failed batch's first ones) is right whatever the failed batch left behind:
    nothing of it, or (a transaction whose commit was in flight) all of it.
    """
    _pause(consumer, consumer.assignment())

    def idle(seconds: float) -> None:
        late = [m for m in consumer.consume(num_messages=max_messages, timeout=seconds) if m.error() is None]
        _pause(consumer, [TopicPartition(tp.topic, tp.partition) for tp in first_offsets(late)])

    deps[name].wait(should_stop, idle)
    if should_stop():
        return
    if settle is not None:
        call_with_retry(deps, settle, should_stop)
    owned = consumer.assignment()
    committed = call_with_retry(deps, lambda: consumer.committed(owned, timeout=10), should_stop)
    consumer.resume(owned)
    for tp in cast(list[TopicPartition], committed):
        where = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING  # nothing committed yet: reset
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, where))
        except KafkaException as exc:  # revoked meanwhile: its new owner reads from the commit
            log.debug("no rewind of %s: %s", tp, exc)


class TransactionalOwner(Protocol):
    """A process with a transactional producer that `reset_transaction` may replace."""

    producer: Producer
    txn_needs_init: bool  # a replacement producer whose init_transactions has not succeeded yet
    retired: list[Producer]


def reset_transaction(owner: TransactionalOwner, config: Mapping[str, Any]) -> None:
    """Make ``owner.producer`` ready for the next batch after an outage: abort its open
    transaction, or (a commit still in flight, a fatal state) replace it by a new producer with
    the same ``transactional.id``, whose ``init_transactions`` fences the old one and has the
    coordinator finish the old transaction. Outage errors are raised: call again once the broker
    is back (`call_with_retry`); a replacement is made once and initialised on the next call."""
    if not owner.txn_needs_init:
        try:
            if abort_open_transaction(owner.producer):
                return
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "abort_transaction timed out"))
        except KafkaException as exc:
            err = exc.args[0]
            if kafka_error_is_outage(err) and err.code() != KafkaError._CONFLICT:
                raise
            log.warning("replacing the transactional producer (%s)", err.str())
        # Not destroyed here: destroying a producer with a request in flight can block.
        owner.retired = [*owner.retired[-2:], owner.producer]
        owner.producer = Producer(dict(config))
        owner.txn_needs_init = True
    owner.producer.init_transactions(30)
    owner.txn_needs_init = False


def _pause(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    if not partitions:
        return
    try:
        consumer.pause(partitions)
    except KafkaException as exc:  # e.g. a partition no longer assigned: nothing to pause
        log.debug("no pause of %s: %s", partitions, exc)
