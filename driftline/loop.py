"""Composition of the loop after scoring: the outcome joiner, the retrain job and the retrainer app."""

from __future__ import annotations

import logging
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from detectors.incidents import DriftIncident
from driftline.errors import DriftlineError
from driftline.retrain_process import run_in_child
from driftline.settings import Settings
from driftline.training_data import topic_training_window
from driftline.wiring import (
    feature_view,
    incident_config,
    model_registry,
    redis_address,
    redis_client,
    redis_probe,
    replica_barrier,
)
from inference.metadata import ModelVersion
from inference.retrain_policy import RetrainPolicy
from inference.retraining import RetrainConfig, retrain
from inference.rollout import RolloutDecision, RolloutPolicy
from inference.views import view_of
from stream.drift import incidents_key
from stream.kafka_security import KafkaSecurityError, faust_broker_settings
from stream.outcomes import JoinConfig, OutcomeJoiner, OutcomeMetrics
from stream.retrainer import RetrainerConfig, build_app, changelog_topics
from stream.topics import Topics, ensure_topics, resolved_replication_factor

log = logging.getLogger("driftline.loop")


def build_joiner(
    s: Settings, cfg: JoinConfig | None = None, metrics: OutcomeMetrics | None = None
) -> OutcomeJoiner:
    registry = model_registry(s, publish=False)
    cache: dict[tuple[str, int], ModelVersion | None] = {}

    def version_meta(model: str, version: int) -> ModelVersion | None:
        if (model, version) not in cache:
            try:
                cache[(model, version)] = registry.get(model, version)
            except LookupError:
                cache[(model, version)] = None
        return cache[(model, version)]

    cfg = cfg or JoinConfig(
        group_id=f"{s.topic_prefix}-outcomes",
        label_wait_seconds=s.label_wait_seconds,
        cooldown_seconds=s.drift_cooldown_seconds,
        incidents=incident_config(s),
        batch_deadline=s.batch_deadline_seconds,
    )
    probe = redis_probe(s)
    return OutcomeJoiner(
        cfg,
        s.kafka_client_config(),
        Topics(s.topic_prefix),
        redis_client(s),
        version_meta,
        metrics,
        redis_probe=probe,
        redis_address=redis_address(s),
        replicated=replica_barrier(s),
    )


def retrain_job(s: Settings, model: str, reason: str) -> dict[str, Any]:
    """Train a candidate on the labeled events in Kafka; if it is not worse, register it and start
    its canary. Blocking: the retrainer runs it in a child process (`driftline.retrain_process`)."""
    registry = model_registry(s)
    cfg = RetrainConfig(
        estimator=s.retrain_estimator,
        recent_rows=s.retrain_recent_rows,
        older_share=s.retrain_older_share,
        min_rows=s.retrain_min_rows,
    )
    # The candidate keeps production's view and input contract: the features it is trained on
    # are the ones production serves (a version from before views were recorded: the default).
    production = registry.deployment(model).production
    view = view_of(production, feature_view(s)) if production is not None else feature_view(s)
    # Only the rows the job trains on are kept (the log is replayed in chunks for their features).
    data = topic_training_window(s.kafka_client_config(), Topics(s.topic_prefix), view, cfg)
    # Production's view and policy; the raw fields and kinds of the data it was trained on.
    inputs = (
        production.inputs.model_copy(update={"raw": data.raw})
        if production is not None and production.inputs is not None
        else None
    )
    result = retrain(
        registry,
        model,
        data.numeric,
        data.categorical,
        data.labels,
        data.ts,
        cfg,
        source=f"{s.topic_prefix}.events + labels ({reason})",
        boolean=data.boolean,
        inputs=inputs,
        warmup=data.warmup,
    )
    out: dict[str, Any] = result.model_dump(mode="json")
    if result.registered and result.candidate_version is not None:
        if registry.deployment(model).production is None:
            registry.promote(model, result.candidate_version, detail={"reason": "no production version"})
            out["rollout"] = "promoted (no production version)"
        elif s.rollout_mode == "shadow":
            registry.shadow(model, result.candidate_version, detail={"reason": reason})
            out["rollout"] = "shadow: scores every event beside production, not served"
        else:
            registry.canary(model, result.candidate_version, s.canary_fraction, detail={"reason": reason})
            out["rollout"] = f"canary at {s.canary_fraction:.0%} of entities"
    return out


def apply_decision(s: Settings, model: str, version: int, decision: RolloutDecision) -> None:
    registry = model_registry(s)
    detail = {"reason": decision.reason, **decision.evidence.model_dump()}
    if decision.action == "promote":
        registry.promote(model, version, detail=detail)
    elif decision.action == "rollback":
        if registry.deployment(model).shadow is not None:
            registry.archive(model, version, detail=detail)  # a shadow is dropped, not rolled back
        else:
            registry.rollback(model, detail=detail)


def retrainer_topics(s: Settings, app_id: str) -> int:
    """Create the retrainer's changelog topics (see `stream.retrainer.changelog_topics`); the
    replication factor for the topics Faust creates itself: the setting, or the cluster's
    default, as for every other Driftline topic."""
    admin = AdminClient(s.kafka_client_config())
    replicas = resolved_replication_factor(admin, s.replication_factor)
    ensure_topics(admin, changelog_topics(app_id, s.partitions, replicas))
    return replicas


def build_retrainer(s: Settings, metrics: CollectorRegistry | None = None) -> faust.App:
    app_id = f"{s.topic_prefix}-retrainer"
    config = RetrainerConfig(
        policy=RetrainPolicy(cooldown_seconds=s.retrain_cooldown_seconds),
        rollout=RolloutPolicy(min_outcomes=s.rollout_min_outcomes),
        max_error_rate=s.max_error_rate,
        partitions=s.partitions,
        replication_factor=retrainer_topics(s, app_id),
        stall_seconds=s.retrainer_stall_seconds,
    )
    try:  # kafka_config's security properties, for Faust's aiokafka (the other clients take them as-is)
        security = faust_broker_settings(s.kafka_client_config())
    except KafkaSecurityError as exc:
        raise DriftlineError(str(exc)) from None
    return build_app(
        app_id,
        f"kafka://{s.kafka_bootstrap}",
        Topics(s.topic_prefix),
        config,
        job=lambda model, reason: run_in_child(s, model, reason),  # memory back after each job
        deployment=model_registry(s, publish=False).deployment,
        apply_decision=lambda model, version, decision: apply_decision(s, model, version, decision),
        broker_settings=security,
        metrics=metrics,
        redis_address=redis_address(s),
        incident_open=lambda model, version, incident_id: incident_is_open(s, model, version, incident_id),
    )


def incident_is_open(s: Settings, model: str, version: int, incident_id: str) -> bool:
    """Whether an incident is still open, as the workers' shared book last wrote it."""
    raw = redis_client(s).hget(incidents_key(s.topic_prefix, model, version), incident_id)
    return raw is not None and DriftIncident.model_validate_json(raw).state == "open"
