"""Outcomes: labels joined to the predictions they judge, by ``event_id``.

The loop is `OutcomeJoiner.run`: consume ``<prefix>.predictions`` and ``<prefix>.labels`` ->
join in Redis -> produce `Outcome` s to ``<prefix>.outcomes`` (key = model name) and error-rate
alerts to ``<prefix>.alerts`` -> commit, each batch one Kafka transaction. Predictions are keyed
by entity and labels by event, so the two halves of a pair land in different partitions, often
in different joiner processes: the join state lives in Redis, shared by all joiners.

Redis keys (namespace = topic prefix), each expiring ``label_wait_seconds`` after its write
(a pair's two keys ``matched_keep_seconds`` after it joined: Redis holds the pairs still waiting,
not every event of the last hour):

* ``<ns>:join:p:<event_id>`` hash, field ``<model>:<version>:<arm>`` -> the prediction (JSON);
* ``<ns>:join:l:<event_id>`` the label (JSON);
* ``<ns>:join:pending-p`` / ``<ns>:join:pending-l`` sorted sets of event ids still waiting for
  their other half, scored by wall-clock deadline; expired members are counted as predictions
  that never got a label / labels without a prediction (``driftline_unlabeled_predictions_total``,
  ``driftline_unmatched_labels_total``), not silently dropped;
* ``{<ns>:outcomes:<model>:<version>}:~errors`` the version's error-rate ADWIN and
  ``...:~errors-cusum`` its Bernoulli CUSUM (JSON checkpoints; one hash tag per version: the
  whole layout is in `driftline.redis_keys`).

Alerts and incidents go through the workers' shared policy of the version (`stream.drift`).

Within a batch predictions are written before labels are read, so a pair arriving together
joins exactly once. A label arriving twice, or a crash of one joiner racing another on the same
pair, can repeat an outcome; outcomes carry a deterministic ``id`` to de-duplicate on (the
retrainer counts by it). A failed commit is redone by producing the same outputs again, not by
joining the batch again. The error-rate detector is checkpointed before each commit: a batch
re-read after a crash between the two is fed to it twice, which can only make a change look
longer.

Outages are waited out as in the worker (`stream.dependency`), and the same watchdog
(`stream.watchdog`, ``batch_deadline``) exits the process with status 75 when a batch or its
recovery outlives the bound - after a broker restart librdkafka's ``send_offsets_to_transaction``
can block past its timeout (confluentinc/librdkafka#5456), which no in-process retry gets out of.

Served outcomes of each model version feed an error-rate detector (ADWIN on the 0/1 error
stream: concept drift) and a Bernoulli CUSUM (`detectors.cusum.ErrorCusum`, pre-change rate =
the holdout's error rate) whose alerts go through the same shared policy as the worker's drift
alerts; every outcome feeds the version's live performance window (accuracy, log-loss, AUC) and
every prediction its confidence-based accuracy estimate (Prometheus gauges).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ValidationError
from redis.cluster import RedisCluster

from detectors.adwin import ErrorRateDetector
from detectors.alerts import AlertPolicy
from detectors.cusum import ErrorCusum
from detectors.incidents import DriftOutput, IncidentBook, IncidentConfig, IncidentEvent
from detectors.policy_store import SharedAlertPolicy
from inference.metadata import ModelVersion
from inference.performance import PerformanceWindow
from stream.dead_letter import DEFAULT_KEEP_BYTES, DeadLetter
from stream.dependency import (
    Dependency,
    Name,
    call_with_retry,
    dependency_gauge,
    kafka_error_is_outage,
    redo_after,
    reset_transaction,
    wait_out,
)
from stream.drift import alerts_key, drift_outputs, incident_events_counter, incidents_key, policy_key
from stream.events import LabelEvent
from stream.offsets import first_offsets, next_offsets
from stream.outputs import BatchOutputs, GaveUp, Output, output_counters
from stream.predictions import Arm, Prediction
from stream.producer import PRODUCER_DEFAULTS
from stream.topics import Topics
from stream.watchdog import Watchdog, exit_stuck

log = logging.getLogger("driftline.outcomes")


class Outcome(BaseModel):
    """A prediction and the label that judges it."""

    id: str  # event_id:model:version:arm - the same pair joined twice has the same id
    event_id: str
    entity_id: str
    model: str
    version: int
    arm: Arm
    served: bool
    score: float
    predicted: int
    label: int
    correct: bool
    event_ts: datetime
    label_ts: datetime

    @classmethod
    def of(cls, p: Prediction, label: LabelEvent, value: int) -> Outcome:
        return cls(
            id=f"{p.event_id}:{p.model}:{p.version}:{p.arm}",
            event_id=p.event_id,
            entity_id=p.entity_id,
            model=p.model,
            version=p.version,
            arm=p.arm,
            served=p.served,
            score=p.score,
            predicted=p.predicted,
            label=value,
            correct=p.predicted == value,
            event_ts=p.ts,
            label_ts=label.ts,
        )


def binary_label(value: int | float | str) -> int:
    """0/1 from a label value; ValueError for anything that is not clearly binary.

    >>> [binary_label(v) for v in (0, 1.0, "1", "true", "False")]
    [0, 1, 1, 1, 0]
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true"):
            return 1
        if v in ("0", "false"):
            return 0
    elif value in (0, 1):
        return int(value)
    raise ValueError(f"label must be 0/1 or true/false, got {value!r}")


@dataclass
class JoinConfig:
    group_id: str = "driftline-outcomes"
    label_wait_seconds: int = 3600  # how long either half waits for the other
    # How long a joined pair's keys stay, for the stragglers of the same event: a shadow's
    # prediction (same worker batch: seconds later), a batch redone after an output failure
    # (within the watchdog's batch_deadline, 120 s). A later straggler waits as a new half.
    matched_keep_seconds: int = 120
    batch_size: int = 1000
    batch_timeout: float = 0.1
    error_delta: float = 0.002  # the error-rate ADWIN's delta
    error_cusum: bool = True  # also the Bernoulli CUSUM (detectors.cusum.ErrorCusum)
    cusum_ert_events: float = 1e8  # its false-alarm budget: one per this many labelled outcomes
    performance_window: int = 1000  # outcomes per live-performance window
    cooldown_seconds: float = 3600.0  # the shared alert policy's (as in the worker)
    # The worker's incident rules (`DriftConfig.incident_book`), window length included: the joiner
    # decides on the same incident book as the workers.
    incidents: IncidentConfig = field(default_factory=IncidentConfig)
    worker_id: str = "outcomes"
    exit_when_idle: float | None = None
    # The watchdog (stream.watchdog): a batch or recovery longer than this (seconds; 0 = none)
    # exits the process with status 75 for its supervisor to restart it.
    batch_deadline: float = 120.0


class OutcomeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        version = ["model", "version"]
        self.outcomes = Counter(
            "driftline_outcomes", "Joined outcomes", ["model", "version", "arm"], registry=r
        )
        self.unlabeled = Counter(
            "driftline_unlabeled_predictions",
            "Predictions whose label never came within the wait",
            registry=r,
        )
        self.unmatched = Counter(
            "driftline_unmatched_labels", "Labels whose prediction never came within the wait", registry=r
        )
        self.dlq = Counter(
            "driftline_outcome_dlq", "Invalid predictions/labels dead-lettered", ["reason"], registry=r
        )
        self.accuracy = Gauge(
            "driftline_live_accuracy", "Accuracy of the latest labeled outcomes", version, registry=r
        )
        self.error_rate = Gauge(
            "driftline_live_error_rate", "Error rate of the latest outcomes", version, registry=r
        )
        self.log_loss = Gauge(
            "driftline_live_log_loss", "Log-loss of the latest labeled outcomes", version, registry=r
        )
        self.auc = Gauge(
            "driftline_live_auc", "AUC of the latest outcomes (both classes present)", version, registry=r
        )
        self.estimated = Gauge(
            "driftline_estimated_accuracy",
            "Accuracy estimated from calibrated scores of the latest predictions, labeled or not (CBPE)",
            version,
            registry=r,
        )
        self.alerts = Counter(
            "driftline_drift_alerts",
            "Drift alerts by severity and detector",
            ["severity", "detector"],
            registry=r,
        )
        self.incident_events = incident_events_counter(r)
        self.retries, self.outputs_refused = output_counters(r)
        self.dependency_up = dependency_gauge(r)


@dataclass
class _VersionState:
    performance: PerformanceWindow
    errors: ErrorRateDetector | None = None
    cusum: ErrorCusum | None = None
    policy: SharedAlertPolicy | None = None
    dirty: bool = False


@dataclass
class _Batch:
    predictions: list[tuple[Prediction, bytes]] = field(default_factory=list)
    labels: list[tuple[LabelEvent, int, bytes]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class OutcomeJoiner:
    """Consume predictions and labels, join them in Redis, produce outcomes (module docstring)."""

    def __init__(
        self,
        cfg: JoinConfig,
        kafka_config: dict[str, Any],
        topics: Topics,
        client: redis.Redis | RedisCluster,
        version_meta: Callable[[str, int], ModelVersion | None] = lambda _m, _v: None,
        metrics: OutcomeMetrics | None = None,
        redis_probe: Callable[[], object] | None = None,
        redis_address: str = "redis",
        replicated: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.replicated = replicated  # after the batch's Redis writes, before its commit
        self.topics = topics
        self.r = client
        self.ns = topics.prefix
        self.version_meta = version_meta  # a version's metadata (threshold, calibration): the registry
        self.metrics = metrics or OutcomeMetrics()
        self._stopping = False
        self._versions: dict[tuple[str, int], _VersionState] = {}
        self._last_sweep = 0.0
        gauge = self.metrics.dependency_up
        kafka = Dependency(
            "kafka",
            str(kafka_config.get("bootstrap.servers")),
            gauge,
            probe=lambda: self.consumer.list_topics(self.topics.predictions, timeout=2),
            logger=log,
        )
        self.deps: dict[Name, Dependency] = {
            "kafka": kafka,
            "redis": Dependency("redis", redis_address, gauge, probe=redis_probe or client.ping, logger=log),
        }
        self.consumer = Consumer(
            {
                **kafka_config,
                "error_cb": kafka.on_kafka_error,  # one line per outage, not librdkafka's
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",  # only predictions the worker committed
                "session.timeout.ms": 10_000,
                # librdkafka prefetches up to 64 MB by default, and a joiner behind fills it: 16 MB
                # is still ~40 batches of predictions ahead, and a process RSS that does not
                # grow with its lag.
                "queued.max.messages.kbytes": 16_384,
            }
        )
        self._producer_config = {
            **kafka_config,
            **PRODUCER_DEFAULTS,
            "linger.ms": 5,
            "error_cb": kafka.on_kafka_error,
            "transactional.id": f"{cfg.group_id}-{cfg.worker_id}",
        }
        self.producer = Producer(self._producer_config)
        self.txn_needs_init = False  # see stream.dependency.reset_transaction
        self.retired: list[Producer] = []
        self.outputs = BatchOutputs(
            self,
            transactional=True,
            dlq_topic=topics.dlq,
            worker=cfg.worker_id,
            retries=self.metrics.retries,
            refused=self.metrics.outputs_refused,
            stopping=lambda: self._stopping,
            keep=DEFAULT_KEEP_BYTES,
        )

        # Bounds each batch and recovery (tests may replace its on_stuck, which exits the process).
        self.watchdog = Watchdog(cfg.batch_deadline, lambda: self._stopping, exit_stuck("outcome joiner"))

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> None:
        stopping = lambda: self._stopping  # noqa: E731
        call_with_retry(self.deps, lambda: self.producer.init_transactions(30), stopping)
        self.consumer.subscribe([self.topics.predictions, self.topics.labels])
        idle_since = time.monotonic()
        self.watchdog.start()
        try:
            while not self._stopping:
                msgs = [
                    m
                    for m in self.consumer.consume(self.cfg.batch_size, self.cfg.batch_timeout)
                    if _ok(m, self.deps["kafka"])
                ]
                if not msgs:
                    self._guarded(lambda _: self._sweep(force=False), [])
                    limit = self.cfg.exit_when_idle
                    if limit and time.monotonic() - idle_since > limit:
                        break
                    continue
                idle_since = time.monotonic()
                self._guarded(self.process, msgs)
        finally:
            self._stopping = True  # also stops the watchdog
            self.consumer.close()

    def _settle(self) -> None:
        """After an outage: the watchdog bounds ending the transaction, as it bounds a batch."""
        self.watchdog.begin_if_idle()
        reset_transaction(self, self._producer_config)

    def _guarded(self, work: Callable[[list[Message]], None], msgs: list[Message]) -> None:
        """Run `work`; on an outage, abort its transaction and wait the outage out (paused), then
        rewind to `msgs` so they are joined again (`stream.dependency.wait_out`). The watchdog
        bounds the work and the recovery, not the wait for the dependency itself."""
        self.watchdog.begin()
        try:
            work(msgs)
        except Exception as exc:
            name = redo_after(exc)
            if name is None:
                raise
            self.watchdog.end()
            self.deps[name].down(exc)
            wait_out(self.consumer, self.deps, name, lambda: self._stopping, self._settle)
            return
        finally:
            self.watchdog.end()
        if msgs:
            for dep in self.deps.values():
                dep.recovered()

    # ---- one batch ------------------------------------------------------------------------
    def process(self, msgs: list[Message]) -> None:
        """Join one batch and commit it with its outputs (a transaction).

        The join, the detectors and their checkpoint run once; a failed transaction is aborted
        and its outputs produced again from memory (`BatchOutputs.deliver`), once per failure,
        so a ``read_committed`` reader sees each outcome, dead letter and alert once. A batch
        that can no longer be committed here is consumed again from its first offsets.
        """
        batch = self._decode(msgs)
        outcomes = self._join(batch)
        outputs = [
            Output(
                self.topics.dlq, letter.key.encode() if letter.key else None, letter.to_json(), letter=letter
            )
            for letter in batch.dead
        ]
        outputs += [
            Output(self.topics.outcomes, o.model.encode(), o.model_dump_json().encode()) for o in outcomes
        ]
        outputs += drift_outputs(self.topics, self._observe(batch, outcomes))
        self._checkpoint()  # before the commit: a replay of this batch starts from it
        if self.replicated is not None:
            self.replicated()  # on a Redis Cluster: the writes on a replica too (stream.replication)
        try:
            self.outputs.deliver(outputs, next_offsets(msgs))
        except GaveUp as exc:
            log.warning("a batch was not committed (%s): it will be consumed again", exc)
            for tp in first_offsets(msgs):
                with contextlib.suppress(KafkaException):  # not ours any more: re-read by its owner
                    self.consumer.seek(tp)
            return
        for letter in batch.dead:
            self.metrics.dlq.labels(letter.reason_code).inc()
        for o in outcomes:
            self.metrics.outcomes.labels(o.model, str(o.version), o.arm).inc()

    def _decode(self, msgs: list[Message]) -> _Batch:
        batch = _Batch()
        for m in msgs:
            raw = m.value() or b""
            try:
                if m.topic() == self.topics.predictions:
                    batch.predictions.append((Prediction.model_validate_json(raw), raw))
                else:
                    label = LabelEvent.model_validate_json(raw)
                    batch.labels.append((label, binary_label(label.label), raw))
            except (ValidationError, ValueError) as exc:
                code = "invalid_label" if m.topic() == self.topics.labels else "invalid_prediction"
                reason = str(exc).splitlines()[0] if isinstance(exc, ValueError) else _first_error(exc)
                batch.dead.append(
                    DeadLetter.of(
                        reason,
                        code,
                        m.topic() or "",
                        m.partition() or 0,
                        m.offset() or 0,
                        m.key(),
                        raw,
                        self.cfg.worker_id,
                    )
                )
        return batch

    def _join(self, batch: _Batch) -> list[Outcome]:
        """Write both halves and read the other half of each, in one round trip."""
        wait = self.cfg.label_wait_seconds
        pipe = self.r.pipeline(transaction=False)
        for p, raw in batch.predictions:
            key = self._pkey(p.event_id)
            pipe.hset(key, f"{p.model}:{p.version}:{p.arm}", raw)
            pipe.expire(key, wait)
            pipe.get(self._lkey(p.event_id))
        for label, _, raw in batch.labels:
            pipe.set(self._lkey(label.event_id), raw, ex=wait)
            pipe.hvals(self._pkey(label.event_id))
        replies = pipe.execute()

        outcomes: list[Outcome] = []
        matched: set[str] = set()
        waiting_p: set[str] = set()
        waiting_l: set[str] = set()
        i = 0
        for p, _ in batch.predictions:
            found = replies[i + 2]
            i += 3
            if found is None:
                waiting_p.add(p.event_id)
                continue
            label = LabelEvent.model_validate_json(found)
            outcomes.append(Outcome.of(p, label, binary_label(label.label)))
            matched.add(p.event_id)
        for label, value, _ in batch.labels:
            preds = replies[i + 1]
            i += 2
            if not preds:
                waiting_l.add(label.event_id)
                continue
            for raw in preds:
                outcomes.append(Outcome.of(Prediction.model_validate_json(raw), label, value))
            matched.add(label.event_id)
        self._pending(waiting_p - matched, waiting_l - matched, matched)
        # After a crash, a half the killed batch wrote can be met from both sides in its replay.
        return list({o.id: o for o in outcomes}.values())

    def _pending(self, waiting_p: set[str], waiting_l: set[str], matched: set[str]) -> None:
        deadline = time.time() + self.cfg.label_wait_seconds
        pipe = self.r.pipeline(transaction=False)
        if waiting_p:
            pipe.zadd(self._key("pending-p"), dict.fromkeys(waiting_p, deadline), nx=True)
        if waiting_l:
            pipe.zadd(self._key("pending-l"), dict.fromkeys(waiting_l, deadline), nx=True)
        if matched:
            pipe.zrem(self._key("pending-p"), *matched)
            pipe.zrem(self._key("pending-l"), *matched)
            keep = min(self.cfg.matched_keep_seconds, self.cfg.label_wait_seconds)
            for event_id in matched:  # LT: only ever shortened
                pipe.expire(self._pkey(event_id), keep, lt=True)
                pipe.expire(self._lkey(event_id), keep, lt=True)
        if len(pipe):
            pipe.execute()
        self._sweep(force=False)

    def _sweep(self, force: bool) -> None:
        """Count (and forget) the halves whose wait ran out; at most every 5 s."""
        now = time.time()
        if not force and now - self._last_sweep < 5.0:
            return
        self._last_sweep = now
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(self._key("pending-p"), "-inf", now)
        pipe.zremrangebyscore(self._key("pending-l"), "-inf", now)
        unlabeled, unmatched = pipe.execute()
        self.metrics.unlabeled.inc(int(unlabeled))
        self.metrics.unmatched.inc(int(unmatched))

    # ---- per model version: performance and concept drift -----------------------------------
    def _state(self, model: str, version: int) -> _VersionState:
        st = self._versions.get((model, version))
        if st is None:
            meta = self.version_meta(model, version)
            st = _VersionState(
                PerformanceWindow(
                    self.cfg.performance_window,
                    threshold=meta.threshold if meta else 0.5,
                    calibration=meta.training.calibration if meta and meta.training else None,
                )
            )
            raw = self.r.get(self._errors_key(model, version))
            if raw is not None:
                st.errors = ErrorRateDetector.from_state(json.loads(raw))
            else:
                # The holdout's error rate: the level a live error rate is judged against.
                accuracy = meta.training.metrics.get("accuracy") if meta and meta.training else None
                reference = 1.0 - accuracy if accuracy is not None else None
                st.errors = ErrorRateDetector(delta=self.cfg.error_delta, reference_error_rate=reference)
            if self.cfg.error_cusum:
                raw_cusum = self.r.get(self._cusum_key(model, version))
                if raw_cusum is not None:
                    st.cusum = ErrorCusum.from_state(json.loads(raw_cusum))
                else:
                    accuracy = meta.training.metrics.get("accuracy") if meta and meta.training else None
                    p0 = 1.0 - accuracy if accuracy is not None else None  # None: learnt from a burn-in
                    st.cusum = ErrorCusum(p0, ert_events=self.cfg.cusum_ert_events)
            cooldown = self.cfg.cooldown_seconds
            st.policy = SharedAlertPolicy(
                self.r,
                policy_key(self.ns, model, version),  # the worker's: one policy per version
                make=lambda: AlertPolicy(cooldown_seconds=cooldown),
                ttl_seconds=max(86_400, int(cooldown) + 60),
                history_key=alerts_key(self.ns, model, version),  # the worker's too: the HTTP API reads it
                incidents=lambda: IncidentBook(self.cfg.incidents),  # the workers' book: one per version
                incidents_key=incidents_key(self.ns, model, version),
            )
            self._versions[(model, version)] = st
        return st

    def _observe(self, batch: _Batch, outcomes: list[Outcome]) -> list[DriftOutput]:
        scores: dict[tuple[str, int], list[float]] = defaultdict(list)
        for p, _ in batch.predictions:
            if p.served:
                scores[(p.model, p.version)].append(p.score)
        for (model, version), s in scores.items():
            self._state(model, version).performance.update_scores(np.asarray(s))

        by_version: dict[tuple[str, int], list[Outcome]] = defaultdict(list)
        for o in outcomes:
            by_version[(o.model, o.version)].append(o)
        alerts: list[DriftOutput] = []
        for (model, version), group in by_version.items():
            st = self._state(model, version)
            group.sort(key=lambda o: o.event_ts)
            st.performance.update(np.array([o.score for o in group]), np.array([o.label for o in group]))
            served = [o for o in group if o.served]
            if served and st.errors is not None and st.policy is not None:
                errors = np.array([0.0 if o.correct else 1.0 for o in served])
                ts = np.array([o.event_ts.timestamp() for o in served])
                signals = st.errors.update(errors, ts)
                if st.cusum is not None:
                    signals += st.cusum.update(errors, ts)
                st.dirty = True
                alerts += st.policy.decide(signals, model=model, version=version)
        for (model, version), st in self._versions.items():
            self._record(model, version, st)
        for a in alerts:
            if isinstance(a, IncidentEvent):
                self.metrics.incident_events.labels(a.model, a.kind).inc()
            else:
                self.metrics.alerts.labels(a.severity, a.detector).inc()
        return alerts

    def _record(self, model: str, version: int, st: _VersionState) -> None:
        m, labels = self.metrics, (model, str(version))
        perf = st.performance.metrics()
        for gauge, value in (
            (m.accuracy, perf.accuracy),
            (m.error_rate, perf.error_rate),
            (m.log_loss, perf.log_loss),
            (m.auc, perf.auc),
            (m.estimated, perf.estimated_accuracy),
        ):
            if value is not None:
                gauge.labels(*labels).set(value)

    def _checkpoint(self) -> None:
        dirty = [(k, st) for k, st in self._versions.items() if st.dirty and st.errors is not None]
        if not dirty:
            return
        # One MULTI per version: its two keys share a slot (`driftline.redis_keys`), two versions'
        # need not (a Redis Cluster refuses a transaction over several slots).
        for (model, version), st in dirty:
            assert st.errors is not None
            pipe = self.r.pipeline(transaction=True)
            pipe.set(self._errors_key(model, version), json.dumps(st.errors.state()), ex=7 * 86_400)
            if st.cusum is not None:
                pipe.set(self._cusum_key(model, version), json.dumps(st.cusum.state()), ex=7 * 86_400)
            pipe.execute()
            st.dirty = False

    # ---- details --------------------------------------------------------------------------
    def _key(self, suffix: str) -> str:
        return f"{self.ns}:join:{suffix}"  # each used alone: no hash tag

    def _pkey(self, event_id: str) -> str:
        return self._key(f"p:{event_id}")

    def _lkey(self, event_id: str) -> str:
        return self._key(f"l:{event_id}")

    def _errors_key(self, model: str, version: int) -> str:
        return f"{self._version_tag(model, version)}:~errors"

    def _cusum_key(self, model: str, version: int) -> str:
        return f"{self._version_tag(model, version)}:~errors-cusum"

    def _version_tag(self, model: str, version: int) -> str:
        """One hash tag per version: its two keys are written in one ``MULTI`` (one slot)."""
        return f"{{{self.ns}:outcomes:{model}:{version}}}"


def _ok(msg: Message, kafka: Dependency) -> bool:
    err = msg.error()
    if err is None:
        return True
    if err.fatal():
        raise KafkaException(err)
    if kafka_error_is_outage(err):
        kafka.down(err.str())  # one line per outage, not per reconnect attempt
    else:
        log.warning("consumer error: %s", err.str())
    return False


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "message"
    return f"{where}: {e['msg']}"


def error_rates(outcomes: Iterable[Outcome]) -> dict[tuple[str, int], tuple[int, int]]:
    """(outcomes, errors) per (model, version) of served outcomes: the rollout's evidence."""
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for o in outcomes:
        if o.served:
            c = counts[(o.model, o.version)]
            c[0] += 1
            c[1] += 0 if o.correct else 1
    return {k: (n, e) for k, (n, e) in counts.items()}
