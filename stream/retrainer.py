"""The retraining consumer: a faust-streaming app that closes the loop from drift to a new model.

Three agents (``build_app``):

* ``alerts`` reads the incident events on ``<prefix>.alerts`` and forwards each critical
  incident about a model's *production* version - its opening, or its escalation to critical -
  as a `RetrainTrigger` (with the incident id) to ``<prefix>.retrain``, keyed by model, where
  ``driftline retrain MODEL`` also sends its requests; `RetrainPolicy` starts at most one job
  per incident;
* ``retrain`` reads ``<prefix>.retrain``; while a canary or shadow of the model is on trial,
  triggers other than requests are skipped (a new candidate would replace it before its
  verdict); otherwise `RetrainPolicy` decides on the per-model state in the
  ``retrain-state`` table (changelog-backed: a restart keeps running jobs and cooldowns). Keyed
  by model, one model's triggers are handled one at a time, so concurrent triggers start one
  job. The job (training, registration, canary: a callable from the composition root, which
  runs it in a child process, `driftline.retrain_process`) is called in a thread while the agent
  waits for it;
* ``rollout`` reads ``<prefix>.outcomes`` (keyed by model, so co-partitioned with its table):
  while a canary (or a shadow) is on trial it counts its outcomes and production's served ones
  since the trial started (``rollouts`` table, saved every 100 outcomes), each outcome ``id``
  once (a redone or re-joined outcome is not evidence twice; this process remembers the latest
  ``RetrainerConfig.dedup_outcomes`` ids, `RecentIds`: repeats come close together, and a set of
  every id would grow with every outcome while production serves), and `decide_rollout`
  promotes or rolls back once the evidence is in. Production's live error rate over each
  ``accuracy_window`` outcomes is checked too: above
  ``max_error_rate`` it triggers a retrain.

A timer re-reads a source partition whose messages wait with no progress for
``RetrainerConfig.stall_seconds`` (a Faust consumer stall, `stream.consumer_stall`), logged and
counted (``driftline_retrainer_stalls``).

Every step (trigger decisions, job results, rollout decisions with their evidence) is published
to ``<prefix>.models`` as a `RetrainEvent`, beside the registry's own lifecycle events. A publish
that fails (e.g. a message the broker refuses) is logged and counted
(``driftline_retrainer_send_failures``), never fatal to an agent; an event's ``detail`` is cut
to `MAX_DETAIL_BYTES`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import faust
from confluent_kafka.admin import NewTopic
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field, ValidationError

from detectors.incidents import IncidentEvent
from inference.metadata import Deployment
from inference.retrain_policy import (
    RetrainPolicy,
    RetrainState,
    RetrainTrigger,
    incident_trigger,
    retry_after_rollback,
    should_retry,
)
from inference.rollout import RolloutDecision, RolloutPolicy, decide_rollout
from stream.consumer_stall import StallWatch
from stream.dependency import Dependency, dependency_gauge, outage_of
from stream.outcomes import Outcome
from stream.recent_ids import RecentIds
from stream.topics import Topics

log = logging.getLogger("driftline.retrainer")

MAX_DETAIL_BYTES = 256 * 1024  # of a RetrainEvent's detail (a job's result could be anything)

RetrainEventKind = Literal[
    "retrain_skipped", "retrain_started", "retrain_finished", "retrain_failed", "rollout_decided"
]


class RetrainEvent(BaseModel):
    """A step of the retraining loop, published to ``<prefix>.models`` (key = model name)."""

    kind: RetrainEventKind
    name: str
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: str
    detail: dict[str, Any] = Field(default_factory=dict)


class RetrainerConfig(BaseModel):
    policy: RetrainPolicy = RetrainPolicy()
    rollout: RolloutPolicy = RolloutPolicy()
    max_error_rate: float | None = Field(None, gt=0, lt=1)  # production's live error rate that retrains
    accuracy_window: int = Field(1000, ge=10)
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)  # of the topics Faust creates (its changelogs)
    dedup_outcomes: int = Field(100_000, ge=1)  # outcome ids remembered to count each once
    stall_seconds: float = Field(30.0, gt=0)  # a source partition with no progress that long is re-read


# The composition root's side: the blocking work, injected so this module knows no registry or trainer.
RetrainJob = Callable[[str, str], dict[str, Any]]  # (model, reason) -> result (JSON-able)
DeploymentOf = Callable[[str], Deployment]
ApplyDecision = Callable[[str, int, RolloutDecision], None]  # promote / roll back with the evidence


def retrainer_metrics(registry: CollectorRegistry) -> tuple[Counter, Counter, Counter, Counter]:
    """The retrainer's counters: steps by kind, rollout decisions by action, failed sends by topic,
    stalled partitions re-read by topic."""
    steps = Counter(
        "driftline_retrain_steps", "Retrainer steps by kind", ["model", "kind"], registry=registry
    )
    decisions = Counter(
        "driftline_rollout_decisions", "Canary/shadow decisions", ["model", "action"], registry=registry
    )
    failures = Counter(
        "driftline_retrainer_send_failures", "Messages the retrainer failed to send", ["topic"],
        registry=registry,
    )  # fmt: skip
    stalls = Counter(
        "driftline_retrainer_stalls", "Stalled source partitions re-read from their committed offset",
        ["topic"], registry=registry,
    )  # fmt: skip
    return steps, decisions, failures, stalls


STATE_TABLE, ROLLOUT_TABLE = "retrain-state", "rollouts"


def changelog_topics(app_id: str, partitions: int, replication_factor: int) -> list[NewTopic]:
    """The changelog topics of the app's tables, as Faust names them (compacted, like Faust's).

    Created before the app starts (`stream.topics.ensure_topics`): a changelog that Faust creates
    itself while starting can be missing from its consumer's metadata when the first table write
    comes, and Faust then refuses the write ("changelog topic ... has 0 partitions",
    `PartitionsMismatch`) and the agent crashes, again after each restart.

    >>> [t.topic for t in changelog_topics("shop-retrainer", 6, -1)]
    ['shop-retrainer-retrain-state-changelog', 'shop-retrainer-rollouts-changelog']
    """
    return [
        NewTopic(
            f"{app_id}-{table}-changelog",
            num_partitions=partitions,
            replication_factor=replication_factor,
            config={"cleanup.policy": "compact"},
        )
        for table in (STATE_TABLE, ROLLOUT_TABLE)
    ]


def bounded_event(event: RetrainEvent) -> bytes:
    """The event as JSON, its ``detail`` replaced by a note when it is over `MAX_DETAIL_BYTES`."""
    data = event.model_dump_json().encode()
    if len(data) > MAX_DETAIL_BYTES:
        note = {"detail_truncated": True, "detail_bytes": len(data)}
        data = event.model_copy(update={"detail": note}).model_dump_json().encode()
    return data


def build_app(
    app_id: str,
    broker: str,
    topics: Topics,
    config: RetrainerConfig,
    job: RetrainJob,
    deployment: DeploymentOf,
    apply_decision: ApplyDecision,
    broker_settings: dict[str, Any] | None = None,
    metrics: CollectorRegistry | None = None,
    redis_address: str = "redis",
    incident_open: Callable[[str, int, str], bool] | None = None,
) -> faust.App:
    owner = uuid.uuid4().hex[:12]  # this instance: a job marked running by another one is stale
    app = faust.App(
        app_id,
        broker=broker,
        store="memory://",  # tables are rebuilt from their changelog topics at start
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication_factor,
        **(broker_settings or {}),
    )

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")

    alerts_topic, triggers_topic = raw_topic(topics.alerts), raw_topic(topics.retrain)
    outcomes_topic, models_topic = raw_topic(topics.outcomes), raw_topic(topics.models)
    state_table = app.Table(STATE_TABLE, default=dict, partitions=config.partitions)
    rollout_table = app.Table(ROLLOUT_TABLE, default=dict, partitions=config.partitions)

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    metrics = metrics or CollectorRegistry()
    steps, decisions, failures, stalls = retrainer_metrics(metrics)
    # Kafka outages are aiokafka's to wait out; the registry calls wait out Redis's here.
    redis_dep = Dependency("redis", redis_address, dependency_gauge(metrics), logger=log)

    async def registry_call(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a thread, retried with backoff while Redis is unreachable (an agent
        that raised would stop consuming its topic for good)."""
        while True:
            try:
                result = await blocking(fn, *args)
            except Exception as exc:
                if outage_of(exc) != "redis":
                    raise
                redis_dep.down(exc)
                await asyncio.sleep(redis_dep.next_delay())
                continue
            redis_dep.recovered()
            return result

    async def send(topic: Any, key: str, value: bytes) -> None:
        # One message that cannot be sent (too large, a broker error) is reported, never fatal.
        try:
            await topic.send(key=key.encode(), value=value)
        except Exception as exc:
            failures.labels(topic.get_topic_name()).inc()
            log.error("could not send %d bytes to %s: %r", len(value), topic.get_topic_name(), exc)

    async def publish(event: RetrainEvent) -> None:
        log.info("%s %s: %s", event.kind, event.name, event.reason)
        steps.labels(event.name, event.kind).inc()
        if event.kind == "rollout_decided":
            decisions.labels(event.name, str(event.detail.get("action"))).inc()
        await send(models_topic, event.name, bounded_event(event))

    async def trigger(t: RetrainTrigger) -> None:
        await send(triggers_topic, t.model, t.model_dump_json().encode())

    @app.agent(alerts_topic)
    async def alerts(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                event = IncidentEvent.model_validate_json(value)
            except ValidationError as exc:
                log.warning("skipping an incident event that does not parse: %s", exc.errors()[0]["msg"])
                continue
            t = incident_trigger(event, time.time())
            if t is None:
                continue  # a warning-level incident, an update that is no escalation, a resolution
            dep: Deployment = await registry_call(deployment, event.model)
            if dep.production is None or dep.production.version != event.version:
                continue  # about a canary or a replaced version: not a reason to retrain production
            await trigger(t)

    @app.agent(triggers_topic)
    async def retrain(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                t = RetrainTrigger.model_validate_json(value)
            except ValidationError as exc:
                log.warning("skipping a retrain trigger that does not parse: %s", exc.errors()[0]["msg"])
                continue
            if t.kind != "manual":
                dep: Deployment = await registry_call(deployment, t.model)
                trial = dep.canary or dep.shadow
                if trial is not None:  # a new job would replace it before it earned its verdict
                    reason = f"{trial.ref} is still on trial ({trial.stage}): no retrain until it is decided"
                    await publish(RetrainEvent(kind="retrain_skipped", name=t.model, reason=reason))
                    continue
            state = RetrainState.model_validate(state_table[t.model] or {})
            start, why, state = config.policy.decide(state, t, owner)
            state_table[t.model] = state.model_dump()
            detail = {"trigger": t.model_dump(), "jobs": state.jobs}
            if not start:
                await publish(RetrainEvent(kind="retrain_skipped", name=t.model, reason=why, detail=detail))
                continue
            await publish(RetrainEvent(kind="retrain_started", name=t.model, reason=why, detail=detail))
            try:
                with watch.busy(topics.retrain):  # its triggers wait for the job: not a stall
                    result = await blocking(job, t.model, why)
                kind: RetrainEventKind = "retrain_finished"
                reason = str(result.get("reason", "done"))
            except Exception as exc:  # a failed job is reported, and the retrainer lives on
                log.exception("retrain of %s failed", t.model)
                result, kind, reason = {"error": repr(exc)}, "retrain_failed", f"{type(exc).__name__}: {exc}"
            state = RetrainPolicy.finished(state, time.time())
            candidate = result.get("candidate_version") if result.get("registered") else None
            if isinstance(candidate, int):  # its rollback retries this trigger's incident
                state.trial_version, state.trial_trigger = candidate, t
            state_table[t.model] = state.model_dump()
            await publish(
                RetrainEvent(kind=kind, name=t.model, reason=reason, detail={**detail, "result": result})
            )
            schedule_retry(should_retry(t, bool(result.get("registered"))))

    retries: set[asyncio.Future[None]] = set()  # pending retries (lost with the process: best effort)

    def schedule_retry(again: RetrainTrigger | None) -> None:
        if again is not None:
            pending = asyncio.ensure_future(retry_later(again))
            retries.add(pending)
            pending.add_done_callback(retries.discard)

    async def retry_later(t: RetrainTrigger) -> None:
        """Send an incident's trigger again after the cooldown, if it is still open and its
        version still serves (see `should_retry`)."""
        await asyncio.sleep(config.policy.cooldown_seconds + 1.0)
        is_open, version, iid = incident_open, t.version, t.incident_id
        if is_open is None or version is None or iid is None:
            return
        dep: Deployment = await registry_call(deployment, t.model)
        if dep.production is None or dep.production.version != version:
            return  # production moved on: the incident is superseded
        if await registry_call(is_open, t.model, version, iid):
            log.info("retrying the retrain for incident %s (attempt %d)", iid, t.attempt)
            await trigger(t.model_copy(update={"ts": time.time()}))

    deployments: dict[str, tuple[float, Deployment]] = {}
    counts: dict[str, dict[str, Any]] = {}  # the table's rows, written back every 100 outcomes
    seen: dict[str, RecentIds] = {}  # per model, the latest outcome ids counted in its current trial

    async def current(model: str) -> Deployment:
        cached = deployments.get(model)
        if cached is None or time.monotonic() - cached[0] > 1.0:
            cached = (time.monotonic(), await registry_call(deployment, model))
            deployments[model] = cached
        return cached[1]

    @app.agent(outcomes_topic)
    async def rollout(stream: faust.StreamT[bytes]) -> None:
        # Per event, not `take()`: Faust only lets a table change inside stream iteration.
        async for value in stream:
            try:
                o = Outcome.model_validate_json(value)
            except ValidationError:
                continue
            dep = await current(o.model)
            shadow = dep.shadow.version if dep.shadow else None
            if not o.served and o.version != shadow:
                continue  # a shadow's outcomes are its evidence; other unserved ones are not
            st = await _count(o, dep)
            st["unsaved"] += 1
            if st["unsaved"] >= 100 or st.get("decided"):
                st["unsaved"] = 0
                st.pop("decided", None)
                rollout_table[o.model] = st

    async def _count(o: Outcome, dep: Deployment) -> dict[str, Any]:
        model = o.model
        st = counts.get(model)
        if st is None:
            st = dict(rollout_table[model] or {})
        prod = dep.production.version if dep.production else None
        # The version on trial: a canary (served to some entities) or a shadow (scored, not served).
        canary = dep.canary.version if dep.canary else dep.shadow.version if dep.shadow else None
        if (st.get("canary"), st.get("production")) != (canary, prod):
            st = {"canary": canary, "production": prod, "cn": 0, "ce": 0, "pn": 0, "pe": 0, "an": 0, "ae": 0}
            seen[model] = RecentIds(config.dedup_outcomes)
        st.setdefault("unsaved", 0)
        counts[model] = st
        ids = seen.get(model)
        if ids is None:
            ids = seen[model] = RecentIds(config.dedup_outcomes)
        if not ids.add(o.id):
            return st  # the same outcome again (a redone batch, a label sent twice): counted once
        wrong = 0 if o.correct else 1
        if canary is not None and o.version == canary:
            st["cn"] += 1
            st["ce"] += wrong
        elif o.version == prod:
            st["pn"] += 1
            st["pe"] += wrong
            st["an"] += 1
            st["ae"] += wrong
        else:
            return st  # a version no longer served: not evidence for this rollout
        if config.max_error_rate is not None and st["an"] >= config.accuracy_window:
            rate = st["ae"] / st["an"]
            if rate > config.max_error_rate:
                reason = f"live error rate {rate:.3f} over {st['an']} outcomes > {config.max_error_rate}"
                await trigger(RetrainTrigger(model=model, kind="accuracy", reason=reason, ts=time.time()))
            st["an"] = st["ae"] = 0
        if canary is not None:
            decision = decide_rollout(config.rollout, st["cn"], st["ce"], st["pn"], st["pe"])
            if decision.action != "wait":
                await registry_call(apply_decision, model, canary, decision)
                deployments.pop(model, None)
                await publish(
                    RetrainEvent(
                        kind="rollout_decided",
                        name=model,
                        reason=decision.reason,
                        detail={"version": canary, **decision.model_dump(exclude={"reason"})},
                    )
                )
                st = {"decided": True, "unsaved": 0}
                counts[model] = st
                seen.pop(model, None)
                if decision.action == "rollback":  # the incident it was trained for is still open
                    state = RetrainState.model_validate(state_table[model] or {})
                    if state.trial_version == canary and state.trial_trigger is not None:
                        schedule_retry(retry_after_rollback(state.trial_trigger))
        return st

    watch: StallWatch[TP] = StallWatch(config.stall_seconds)
    sources = {topics.alerts, topics.retrain, topics.outcomes}

    @app.timer(interval=max(1.0, config.stall_seconds / 6))
    async def unstall() -> None:
        """Re-read a source partition Faust stopped delivering (see `stream.consumer_stall`)."""
        consumer = app.consumer
        # Faust's own view of what its agents processed (private: a version without it has no watch).
        committed: dict[Any, int | None] | None = getattr(consumer, "_committed_offset", None)
        if committed is None or not redis_dep.up:  # every agent may be waiting for Redis
            watch.reset()
            return
        # Faust's TP is a (topic, partition) named tuple: the watch's partitions are Faust's own.
        offsets = {
            tp: (committed.get(tp), consumer.highwater(tp))
            for tp in consumer.assignment()
            if tp.topic in sources
        }
        for tp in watch.observe(offsets):
            at, end = offsets[tp]
            stalls.labels(tp.topic).inc()
            log.warning(
                "%s[%d]: %d messages wait from offset %s and none was processed in %.0f s "
                "(a Faust consumer stall); re-reading them from the committed offset",
                tp.topic, tp.partition, (end or 0) - (at or 0), at, config.stall_seconds,
            )  # fmt: skip
            try:
                consumer.resume_partitions({tp})
                await consumer.seek(tp, at or 0)  # never committed: from the start (reset: earliest)
            except Exception as exc:  # the broker may be away: the next window tries again
                log.warning("could not re-read %s[%d]: %r", tp.topic, tp.partition, exc)

    return app
