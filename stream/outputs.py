"""Making one batch's outputs durable with its offsets, whatever one message does.

A processor (the worker, the outcome joiner) computes a batch's outputs once, as `Output` s, and
hands them to `BatchOutputs.deliver` with the offsets that commit the batch:

* **at-least-once** (no transactions): every output is produced and flushed; the ones whose
  delivery failed are produced again (and only those), until all are acknowledged; then the
  offsets are committed. A redo can repeat an output (a failed acknowledgement of a written
  message) but never loses one.
* **exactly-once** (a transactional producer): outputs and offsets are one transaction; a
  failed one is aborted and all the outputs are produced again in a new transaction, so a
  ``read_committed`` reader sees each output once however many attempts fail.

Each failed attempt is one redo (``retries``), never a re-processing of the batch: the features,
scores and detector state behind the outputs are not computed again.

A message the broker refuses for its size (``MSG_SIZE_TOO_LARGE``, at ``produce()`` or at
delivery) is never retried as it is: its topic's limit is learnt (the smallest refused size) and
the output is replaced by a smaller one - a dead letter without its original, or for a
prediction a dead letter of its source event (``output_too_large``) - or, with nothing to replace
it (an alert), dropped with an error log and ``driftline_outputs_refused{action="dropped"}``.
Any other produce error fails the attempt, which is redone after a capped backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from stream.dead_letter import DeadLetter

log = logging.getLogger("driftline.outputs")

# Commit errors that mean "this member no longer owns (some of) these partitions".
REBALANCED = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS}
)
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})
_BACKOFF_CAP = 5.0


@dataclass(slots=True)
class Output:
    """One message to produce, and what stands in for it if the broker refuses its size."""

    topic: str
    key: bytes | None
    value: bytes
    letter: DeadLetter | None = None  # this output is that dead letter
    source: Message | None = None  # the input this output answers (a prediction's event)


@dataclass
class _Attempt:
    failed: list[Output] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused_at_produce: bool = False  # not even queued: a transaction would commit without it


def output_counters(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """The counters a `BatchOutputs` keeps: failed attempts at a batch's outputs, and outputs
    refused as too large (by topic and what was done instead)."""
    retries = Counter(
        "driftline_batch_retries",
        "Failed attempts at making a batch's outputs durable (each one redone once)",
        registry=registry,
    )
    refused = Counter(
        "driftline_outputs_refused",
        "Outputs refused as too large: replaced by a smaller dead letter, or dropped",
        ["topic", "action"],
        registry=registry,
    )
    return retries, refused


class KafkaClients(Protocol):
    """Whoever owns the producer and the consumer (read at each use: an owner may replace them)."""

    producer: Producer
    consumer: Consumer


class GaveUp(Exception):
    """The batch can no longer be committed by this process: stopping, or its group moved on."""


class BatchOutputs:
    """Delivers batches of `Output` s (see the module docstring)."""

    def __init__(
        self,
        kafka: KafkaClients,
        *,
        transactional: bool,
        dlq_topic: str,
        worker: str,
        retries: Counter,
        refused: Counter,
        stopping: Callable[[], bool],
        keep: int,
    ) -> None:
        self.kafka = kafka
        self.transactional = transactional
        self.dlq_topic = dlq_topic
        self.worker = worker
        self.retries = retries
        self.refused = refused
        self.stopping = stopping
        self.keep = keep
        self.size_limits: dict[str, int] = {}  # topic -> smallest message size it refused
        self._attempt = _Attempt()

    # ---- one batch ----------------------------------------------------------------------------
    def deliver(self, outputs: list[Output], offsets: list[TopicPartition]) -> None:
        """Make ``outputs`` durable and commit ``offsets``; raises `GaveUp` when it cannot."""
        if self.transactional:
            self._transaction(outputs, offsets)
        else:
            self._at_least_once(outputs, offsets)

    def _at_least_once(self, outputs: list[Output], offsets: list[TopicPartition]) -> None:
        pending, failures = outputs, 0
        while True:
            self._attempt = _Attempt()
            for out in pending:
                self.send(out)
            while self.kafka.producer.flush(5.0):  # librdkafka retries these itself until they time out
                if self.stopping():
                    raise GaveUp("stopping with outputs unacknowledged")
            attempt = self._attempt
            if not attempt.failed:
                break
            failures += 1
            self._failed(attempt, failures)
            pending = attempt.failed
        try:
            self.kafka.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in REBALANCED:
                raise
            # The group rebalanced during the batch: its outputs are durable, and the
            # partitions' new owner re-reads from the last committed offsets, which every
            # output skips or de-duplicates (feature store watermarks, window offsets, ids).
            log.warning("offsets not committed, the group rebalanced meanwhile: %s", exc)

    def _transaction(self, outputs: list[Output], offsets: list[TopicPartition]) -> None:
        failures = 0
        while True:
            self._attempt = _Attempt()
            self.kafka.producer.begin_transaction()
            # What was sent: a stand-in replaces (or a drop removes) an output for every later attempt.
            outputs = [sent for sent in map(self.send, outputs) if sent is not None]
            try:
                if self._attempt.refused_at_produce:
                    raise KafkaException(KafkaError(KafkaError._FAIL, "; ".join(self._attempt.errors[:3])))
                self.kafka.producer.send_offsets_to_transaction(
                    offsets, self.kafka.consumer.consumer_group_metadata(), 30
                )
                self.kafka.producer.commit_transaction(30)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.fatal():
                    raise  # fenced or fatal: this producer can't continue; a restart resumes safely
                self._abort()
                failures += 1
                self._attempt.errors.insert(0, str(err.str() if isinstance(err, KafkaError) else err))
                if isinstance(err, KafkaError) and err.code() in REBALANCED:
                    raise GaveUp(f"the group rebalanced: {err.str()}") from exc
                self._failed(self._attempt, failures)

    def _failed(self, attempt: _Attempt, failures: int) -> None:
        """One failed attempt: count it, say why, back off (or give up when stopping)."""
        self.retries.inc()
        log.warning(
            "outputs of a batch failed (attempt %d: %s); producing them again",
            failures,
            "; ".join(attempt.errors[:3]) or f"{len(attempt.failed)} not delivered",
        )
        if self.stopping():
            raise GaveUp("stopping")
        time.sleep(min(0.1 * 2 ** (failures - 1), _BACKOFF_CAP))
        if self.stopping():
            raise GaveUp("stopping")

    def _abort(self) -> None:
        while True:
            try:
                self.kafka.producer.abort_transaction(30)
                self.kafka.producer.poll(0)  # the purged messages' reports, before the next attempt starts
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or self.stopping():
                    raise
                log.warning("aborting the transaction failed (%s); trying again", err.str())
                time.sleep(1.0)

    # ---- one message --------------------------------------------------------------------------
    def send(self, out: Output) -> Output | None:
        """Produce one output (or its stand-in: returned; None: dropped). A size refusal is
        handled here, any other failure fails the attempt."""
        limit = self.size_limits.get(out.topic)
        if limit is not None and len(out.value) >= limit:
            replaced = self._replacement(out, f"{len(out.value)} bytes, {out.topic} refuses {limit}")
            if replaced is None:
                return None
            out = replaced
        while True:
            try:
                self.kafka.producer.produce(
                    out.topic, out.value, out.key, on_delivery=partial(self._on_delivery, out)
                )
                return out
            except BufferError:
                self.kafka.producer.poll(0.05)  # the local queue is full: serve callbacks until there is room
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise
                if err.code() in _TOO_LARGE:
                    self._learn(out)  # the producer's own message.max.bytes: the retry is the stand-in
                    return self.send(out)
                self._attempt.failed.append(out)
                self._attempt.errors.append(f"{out.topic}: {err.str()}")
                self._attempt.refused_at_produce = True
                return out

    def _on_delivery(self, out: Output, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            return
        if err.code() in _TOO_LARGE:
            self._learn(out)
        self._attempt.failed.append(out)
        self._attempt.errors.append(f"{out.topic}: {err.str()}")

    def _learn(self, out: Output) -> None:
        size = len(out.value)
        if size < self.size_limits.get(out.topic, size + 1):
            log.warning(
                "%s refused a message of %d bytes as too large: bigger ones are replaced", out.topic, size
            )
            self.size_limits[out.topic] = size

    def _replacement(self, out: Output, why: str) -> Output | None:
        """A smaller stand-in for an output its topic refuses, or None (logged and counted)."""
        letter = None
        if out.letter is not None and out.letter.original_kept:
            letter = out.letter.without_original(why)
        elif out.source is not None and out.letter is None:
            msg = out.source
            letter = DeadLetter.of(
                f"its output to {out.topic} was refused by the broker ({why})",
                "output_too_large",
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                msg.value(),
                self.worker,
                keep=self.keep,
            )
        if letter is None:
            self.refused.labels(out.topic, "dropped").inc()
            log.error("dropped an output to %s: %s, and nothing smaller can stand in for it", out.topic, why)
            return None
        self.refused.labels(out.topic, "replaced").inc()
        return Output(self.dlq_topic, out.key, letter.to_json(), letter=letter)
