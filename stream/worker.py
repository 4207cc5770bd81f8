"""The streaming inference worker: consume -> validate -> score -> produce -> commit.

The whole loop is ``Worker.run`` / ``Worker.process``. Delivery guarantees:

* **at-least-once** (default): a batch's predictions and dead letters are flushed and every
  delivery acknowledged by the broker before its offsets are committed (synchronously). An
  output whose delivery failed is produced again from memory (`stream.outputs`), so a crash or
  an output failure can repeat predictions but never lose one.
* **exactly-once** (``exactly_once=True``): each batch's outputs and its offsets are one Kafka
  transaction (``send_offsets_to_transaction``); a failed transaction is aborted and its
  outputs produced again in a new one, so a ``read_committed`` consumer sees every event's
  prediction, dead letter and alert once, across output failures and a SIGKILL.

Either way a batch is processed once: a retry re-sends its outputs, it does not score it again.
Hostile input costs one dead letter each (`stream.decode.InputLimits`), and a message the
broker refuses (too large) is replaced by a smaller dead letter, never a crash loop.

Swaps of the model deployment (promote, canary, shadow, rollback) happen between batches.
SIGTERM/SIGINT finish the current batch, commit it and exit.

Outages (`stream.dependency`): a batch whose work finds Redis or the broker unreachable is not
committed; the worker pauses its partitions, waits for the dependency with backoff (one log line
when it goes, one when it is back, ``driftline_dependency_up``), then rewinds and redoes the
batch. A watchdog thread bounds a batch's time (``batch_deadline``): a batch still running after
it (a call hung inside librdkafka, a transaction that cannot finish) makes the process log one
line and exit with status 75 (`stream.watchdog`), so its supervisor restarts it; the restarted
worker redoes the uncommitted batch from the last committed offsets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from detectors.incidents import DriftOutput
from stream.dead_letter import DeadLetter
from stream.decode import EventBatch, InputLimits, decode_batch
from stream.dependency import (
    Dependency,
    Name,
    call_with_retry,
    kafka_error_is_outage,
    redo_after,
    reset_transaction,
    wait_out,
)
from stream.drift import NO_UNSCORED, DriftStage, Unscored, drift_outputs
from stream.input_gate import InputGate
from stream.metrics import WorkerMetrics
from stream.offsets import first_offsets, next_offsets
from stream.outputs import BatchOutputs, GaveUp, Output
from stream.producer import PRODUCER_DEFAULTS
from stream.scoring import ModelFollower, Scorer, wait_for_scorer
from stream.topics import Topics
from stream.watchdog import Watchdog, exit_stuck

log = logging.getLogger("driftline.worker")


Column = Sequence[Any] | np.ndarray
"""One feature's values for a batch: a list (raw event values) or an array (the feature store's)."""


@dataclass
class FeatureColumns:
    """A batch's model inputs by feature name, and the events refused (batch index -> reason).

    ``per_version``: the inputs of versions whose feature view is not production's, by ref.
    """

    columns: Mapping[str, Column]
    rejected: Mapping[int, str] = field(default_factory=dict)
    per_version: Mapping[str, Mapping[str, Column]] = field(default_factory=dict)

    def subset(self, keep: Sequence[int]) -> FeatureColumns:
        """The columns of rows `keep` only (nothing rejected)."""

        def pick(columns: Mapping[str, Column]) -> dict[str, list[Any]]:
            return {name: [col[i] for i in keep] for name, col in columns.items()}

        return FeatureColumns(pick(self.columns), {}, {ref: pick(c) for ref, c in self.per_version.items()})


class FeatureSource(Protocol):
    """Supplies the model inputs of a batch: the raw event, or the online feature store."""

    def columns(self, batch: EventBatch, names: Sequence[str]) -> FeatureColumns: ...


class RawFeatures:
    """The event's own features, as sent."""

    def columns(self, batch: EventBatch, names: Sequence[str]) -> FeatureColumns:
        return FeatureColumns(batch.columns(names))


def _cell(col: Column, i: int) -> Any:
    """Row `i` of a column as a plain Python value (a feature store column is a float64 array)."""
    return col[i].item() if isinstance(col, np.ndarray) else col[i]


def feature_columns(source: FeatureSource, batch: EventBatch, scorer: Scorer) -> FeatureColumns:
    """A batch's inputs from `source`: per deployed version when it knows each version's view
    (`stream.version_features.VersionFeatures.columns_for`), else one set for all."""
    columns_for = getattr(source, "columns_for", None)
    if columns_for is not None:
        result: FeatureColumns = columns_for(batch, scorer)
        return result
    return source.columns(batch, scorer.feature_names())


@dataclass
class WorkerConfig:
    model: str
    group_id: str
    batch_size: int = 1000
    batch_timeout: float = 0.02  # a batch that does not fill waits this long: bounds latency
    exactly_once: bool = False
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    attach_features: bool = False
    # Stop after this many seconds without events, counted from the first partition assignment
    # (tests, batch jobs); a worker waiting for partitions keeps waiting.
    exit_when_idle: float | None = None
    # The watchdog: a batch running longer than this (seconds; 0 = no watchdog) exits the process.
    batch_deadline: float = 120.0
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    limits: InputLimits = field(default_factory=InputLimits)


def consumer_size_limits(max_event_bytes: int) -> dict[str, int]:
    """librdkafka fetch sizes for events of at most ``max_event_bytes``.

    A partition fetch asks for one maximal event; a fetch response holds at most 16 of them.
    The broker still returns a first record batch bigger than these (so a consumer always
    progresses), up to the topic's ``max.message.bytes``: the response limit
    (``receive.message.max.bytes``, which must exceed ``fetch.max.bytes`` by 512) is kept at
    librdkafka's 100 MB so such a message arrives and is dead-lettered as ``event_too_large``
    rather than stalling its partition.

    >>> consumer_size_limits(1 << 20)["fetch.max.bytes"]
    16777216
    """
    fetch = 16 * max_event_bytes
    return {
        "max.partition.fetch.bytes": max_event_bytes,
        "fetch.max.bytes": fetch,
        "receive.message.max.bytes": max(100_000_000, fetch + 512),
    }


class Worker:
    def __init__(
        self,
        cfg: WorkerConfig,
        kafka_config: dict[str, Any],
        topics: Topics,
        follower: ModelFollower,
        features: FeatureSource | None = None,
        metrics: WorkerMetrics | None = None,
        drift: DriftStage | None = None,
        inputs: InputGate | None = None,
        redis: Dependency | None = None,
        replicated: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        # Called after the batch's Redis writes, before its commit (`stream.replication`).
        self.replicated = replicated
        self.topics = topics
        self.follower = follower
        self.features = features or RawFeatures()
        self.metrics = metrics or WorkerMetrics()
        self.drift = drift
        self.inputs = inputs or InputGate(self.metrics.registry, cfg.worker_id)
        self._stopping = False
        self.kafka = Dependency(
            "kafka",
            str(kafka_config.get("bootstrap.servers")),
            self.metrics.dependency_up,
            probe=lambda: self.consumer.list_topics(self.topics.events, timeout=2),
        )
        self.consumer = Consumer(
            {
                **kafka_config,
                "error_cb": self.kafka.on_kafka_error,  # one line per outage, not librdkafka's
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                # A worker that dies (SIGKILL) hands its partitions over after this long.
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                **consumer_size_limits(cfg.limits.max_event_bytes),
                **cfg.consumer_overrides,
            }
        )
        producer_config = {
            **kafka_config,
            **PRODUCER_DEFAULTS,
            "linger.ms": 5,
            "error_cb": self.kafka.on_kafka_error,
        }
        if cfg.exactly_once:
            producer_config["transactional.id"] = f"{cfg.group_id}-{cfg.worker_id}"
        self._producer_config = producer_config
        self.producer = Producer(producer_config)
        self.outputs = BatchOutputs(
            self,
            transactional=cfg.exactly_once,
            dlq_topic=topics.dlq,
            worker=cfg.worker_id,
            retries=self.metrics.retries,
            refused=self.metrics.outputs_refused,
            stopping=lambda: self._stopping,
            keep=cfg.limits.dead_letter_keep_bytes,
        )
        self.txn_needs_init = False  # see stream.dependency.reset_transaction
        self.retired: list[Producer] = []
        self.scorer: Scorer | None = None
        self._last_lag_update = 0.0
        self._idle_since = time.monotonic()
        # Partitions owned right now, kept by the rebalance callbacks. Read this, not the
        # consumer, from other threads: the consumer is used by the worker thread only.
        self.assigned: set[int] = set()
        self._ever_assigned = False
        self.deps: dict[Name, Dependency] = {"kafka": self.kafka}
        if redis is not None:
            self.deps["redis"] = redis
        self._next_probe = 0.0
        # Bounds each batch and recovery (tests replace its on_stuck, which exits the process).
        self.watchdog = Watchdog(cfg.batch_deadline, lambda: self._stopping, exit_stuck("worker"))
        follower.track(self.metrics.follower_poll_age, self.deps)

    # ---- lifecycle ------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: finishing the current batch, then exiting", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        self.scorer = wait_for_scorer(self.follower, lambda: self._stopping, deps=self.deps)
        if self.scorer is None:
            return
        self._show_models(self.scorer)
        if self.drift is not None:
            self.drift.deployed(self.scorer.deployment)
        self.follower.start()
        stopping = lambda: self._stopping  # noqa: E731
        if self.cfg.exactly_once:
            call_with_retry(self.deps, lambda: self.producer.init_transactions(30), stopping)
        self.consumer.subscribe([self.topics.events], on_revoke=self._on_revoke, on_assign=self._on_assign)
        if self.drift is not None:
            drift = self.drift
            call_with_retry(self.deps, lambda: drift.set_partitions(self._topic_partitions()), stopping)
        self._idle_since = time.monotonic()
        self.watchdog.start()
        try:
            while not self._stopping:
                # Swap deployments only between batches.
                new = self.follower.take()
                if new is not None:
                    self.scorer = new
                    self.metrics.swaps.inc()
                    self._show_models(new)
                    log.info("deployment now %s", new.signature)
                    if self.drift is not None:
                        self.drift.deployed(new.deployment)
                msgs = self.consumer.consume(num_messages=self.cfg.batch_size, timeout=self.cfg.batch_timeout)
                msgs = [m for m in msgs if not self._is_error(m)]
                if not msgs:
                    self._probe_kafka()
                    self._update_lag()
                    if self._idle_too_long():
                        break
                    continue
                self.kafka.recovered()
                self._idle_since = time.monotonic()
                self._batch(msgs)
                self._update_lag()
        finally:
            self._stopping = True  # also stops the watchdog
            self.follower.stop()
            self.consumer.close()  # leaves the group now, so partitions move at once
            self.producer.flush(10)

    def _idle_too_long(self) -> bool:
        limit = self.cfg.exit_when_idle
        return bool(limit) and self._ever_assigned and time.monotonic() - self._idle_since > (limit or 0)

    # ---- outages and the watchdog ---------------------------------------------------------
    def _batch(self, msgs: list[Message]) -> None:
        """`process` one batch under the watchdog; an outage inside it is waited out, then the
        batch is redone (it is not committed, and every output of a redo is idempotent)."""
        self.watchdog.begin()
        try:
            self.process(msgs)
        except Exception as exc:
            name = redo_after(exc)
            if name is None or name not in self.deps:
                raise
            self.watchdog.end()
            self._wait_out(self.deps[name], exc)
            return
        finally:
            self.watchdog.end()
        self.metrics.batch_completed()
        self.kafka.recovered()

    def _wait_out(self, dep: Dependency, exc: BaseException) -> None:
        dep.down(exc)
        self.metrics.outage_waits.labels(dep.name).inc()
        if self.drift is not None:
            self.drift.rewound()  # the redo publishes the windows this batch closed
        # Once the dependency is back, the watchdog bounds the recovery (ending the transaction,
        # reading the committed offsets) as it bounds a batch.
        wait_out(self.consumer, self.deps, dep.name, lambda: self._stopping, self._settle)
        self.watchdog.end()

    def _settle(self) -> None:
        self.watchdog.begin_if_idle()
        if self.cfg.exactly_once:
            self._reset_transaction()

    def _reset_transaction(self) -> None:
        reset_transaction(self, self._producer_config)

    def _probe_kafka(self) -> None:
        """While the broker is marked down and nothing arrives, probe it now and then."""
        if self.kafka.up or time.monotonic() < self._next_probe:
            return
        if not self.kafka.check():
            self._next_probe = time.monotonic() + self.kafka.next_delay()

    # ---- one batch ------------------------------------------------------------------------
    def process(self, msgs: list[Message]) -> None:
        """Score one micro-batch and commit it with its outputs.

        Features, scores and drift state are computed once (`_outputs`); an output failure is
        redone from memory by `BatchOutputs.deliver`, once per failure, never by processing the
        batch again. A batch that can no longer be committed here (stopping, or the group moved
        on) is given up: the consumer is rewound to it, so it is consumed again (or by the
        partition's new owner) and the redo finds its feature-store writes as replays.
        """
        started = time.perf_counter()
        self._process_once(msgs, started)

    def _process_once(self, msgs: list[Message], started: float) -> None:
        outputs, dead = self._outputs(msgs, started)
        if self.replicated is not None:
            self.replicated()  # the batch's Redis writes on a replica too, before the commit
        try:
            self.outputs.deliver(outputs, next_offsets(msgs))
        except GaveUp as exc:
            log.warning("a batch was not committed (%s): it will be consumed again", exc)
            self._give_up(msgs)
            return
        if self.drift is not None:
            self.drift.published()  # after the commit: a kill before it re-publishes, never loses

        m = self.metrics
        for letter in dead:
            m.dlq.labels(letter.reason_code).inc()
        m.consumed.inc(len(msgs))
        m.processed.labels("ok").inc(len(msgs) - len(dead))
        m.processed.labels("dlq").inc(len(dead))
        m.batch_size.observe(len(msgs))
        m.batch_latency.observe(time.perf_counter() - started)

    def _outputs(self, msgs: list[Message], started: float) -> tuple[list[Output], list[DeadLetter]]:
        """The batch's outputs (predictions, dead letters, alerts), and its dead letters."""
        assert self.scorer is not None
        limits = self.cfg.limits
        batch, dead = decode_batch(msgs, self.cfg.worker_id, limits)
        outputs: list[Output] = []
        gated = self.inputs.check(batch, self.scorer)  # the input contracts
        batch, unscored = gated.batch, gated.unscored
        dead += gated.dead
        if len(batch):
            features = feature_columns(self.features, batch, self.scorer)
            if features.rejected:  # e.g. later than the feature store's allowed lateness
                dead += [
                    batch.dead_letter(i, r, "late_event", self.cfg.worker_id)
                    for i, r in features.rejected.items()
                ]
                keep = [i for i in range(len(batch)) if i not in features.rejected]
                batch = batch.subset(keep)
                features = features.subset(keep)
            if len(batch):
                unscored = self._predict(batch, features, started, outputs, unscored)
        if self.drift is not None and len(unscored):  # no production rows left to carry them
            production = self.scorer.deployment.production
            assert production is not None
            none = np.empty(0, dtype=np.int64)
            alerts = self.drift.observe(production, {}, none, np.empty(0), np.empty(0), none, none, unscored)
            self._alert_outputs(alerts, outputs)
        for letter in dead:
            key = letter.key.encode() if letter.key else None
            outputs.append(Output(self.topics.dlq, key, letter.to_json(), letter=letter))
        if self.drift is not None:
            self.drift.checkpoint()  # before the commit, so a replay of this batch finds it
        return outputs, dead

    def _predict(
        self,
        batch: EventBatch,
        features: FeatureColumns,
        started: float,
        outputs: list[Output],
        unscored: Unscored = NO_UNSCORED,
    ) -> Unscored:
        """Score the batch into `outputs`; the production arm's drift observation takes `unscored`
        (returned: what is left, nothing unless no event was routed to production)."""
        assert self.scorer is not None
        columns = features.columns
        scored = self.scorer.score(batch.entity_ids, columns, features.per_version)
        now = time.time()
        events = batch.events
        event_times = batch.event_times()
        partitions, offsets = np.asarray(batch.partitions), np.asarray(batch.offsets)
        topic = self.topics.predictions
        for arm in scored:
            meta, shadow = arm.meta, arm.arm == "shadow"
            if self.drift is not None and arm.arm == "production":
                r = arm.rows
                alerts = self.drift.observe(
                    meta, columns, r, arm.scores, event_times[r], partitions[r], offsets[r], unscored
                )
                self._alert_outputs(alerts, outputs)
                unscored = NO_UNSCORED
            self.metrics.inference.labels(meta.name, str(meta.version)).observe(arm.inference_s)
            self.metrics.predictions.labels(meta.name, str(meta.version), arm.arm).inc(len(arm.rows))
            processing_ms = round((time.perf_counter() - started) * 1000, 3)
            for i, score in zip(arm.rows.tolist(), arm.scores.tolist(), strict=True):
                e = events[i]
                record = {
                    "event_id": e.event_id,
                    "entity_id": e.entity_id,
                    "ts": e.ts,
                    "model": meta.name,
                    "version": meta.version,
                    "arm": arm.arm,
                    "score": score,
                    "predicted": int(score >= meta.threshold),
                    "served": not shadow,
                    "shadow": shadow,
                    "processing_ms": processing_ms,
                    "source_partition": batch.partitions[i],
                    "source_offset": batch.offsets[i],
                }
                if self.cfg.attach_features:
                    own = features.per_version.get(meta.ref, columns)
                    record["features"] = {f.name: _cell(own[f.name], i) for f in meta.features}
                value = orjson.dumps(record, option=orjson.OPT_UTC_Z)
                outputs.append(Output(topic, e.entity_id.encode(), value, source=batch.messages[i]))
        self.metrics.event_lag.observe_many(now - event_times)
        return unscored

    def _alert_outputs(self, alerts: Sequence[DriftOutput], outputs: list[Output]) -> None:
        """Queue the drift stage's alerts and incident events with the batch's other outputs."""
        outputs += drift_outputs(self.topics, alerts)

    # ---- Kafka details --------------------------------------------------------------------
    def _give_up(self, msgs: list[Message]) -> None:
        """The batch is not committed: leave its windows to a redo and consume it again."""
        if self.drift is not None:
            self.drift.rewound()
        for tp in first_offsets(msgs):
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:  # no longer ours: its new owner reads it from the commit
                log.info("not rewinding partition %d: %s", tp.partition, exc.args[0].str())

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.fatal():
            raise KafkaException(err)
        if kafka_error_is_outage(err):
            self.kafka.down(err.str())  # one line per outage, not one per reconnect attempt
        else:
            log.warning("consumer error: %s", err.str())
        return True

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {p.partition for p in partitions}
        self._ever_assigned = True
        log.info("assigned %s", sorted(p.partition for p in partitions))
        self._idle_since = time.monotonic()  # a rebalance is activity: idle time starts over

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every processed batch is already committed (synchronously, or in its transaction),
        # so nothing is pending when partitions leave.
        self.assigned -= {p.partition for p in partitions}
        if self.drift is not None:
            self.drift.forget(p.partition for p in partitions)
        log.info("revoked %s", sorted(p.partition for p in partitions))
        for p in partitions:
            with contextlib.suppress(KeyError):  # no lag reported yet for this partition
                self.metrics.consumer_lag.remove(str(p.partition))

    def _topic_partitions(self) -> list[int]:
        topic = self.topics.events
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(f"topic {topic} has no partitions: create it first (driftline topics create)")
        return sorted(meta.partitions)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 1.0:
            return
        self._last_lag_update = now
        try:
            positions = self.consumer.position(self.consumer.assignment())
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.metrics.consumer_lag.labels(str(tp.partition)).set(max(high - tp.offset, 0))
        except KafkaException as exc:  # lag is a metric: an outage must not stop the loop for it
            log.debug("consumer lag not updated: %s", exc)

    def _show_models(self, scorer: Scorer) -> None:
        self.metrics.model_info.clear()
        for meta, stage in scorer.versions():
            self.metrics.model_info.labels(meta.name, str(meta.version), stage).set(1)
