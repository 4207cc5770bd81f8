"""Composition: connects the libraries (inference/, feature_store/, detectors/) to Kafka and Redis."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError
from redis.cluster import RedisCluster

from detectors.alerts import DriftAlert
from detectors.incidents import DriftIncident, IncidentConfig
from detectors.signals import WindowStat
from driftline.errors import DriftlineError
from driftline.model_inputs import parse_view
from driftline.redis_keys import RedisClient
from driftline.registry_guard import GuardedRegistry, SignatureAlarm
from driftline.settings import Settings
from feature_store.definitions import FeatureView
from feature_store.online import OnlineStore
from inference.api import ApiDeps, DriftStat, create_app
from inference.metadata import ModelEvent, ModelVersion
from inference.registry import ModelRegistry
from inference.signing import MetadataSigner
from inference.views import view_of
from stream.decode import InputLimits
from stream.dependency import Dependency, dependency_gauge
from stream.drift import DriftConfig, DriftStage, all_incidents, latest_key, recent_alerts
from stream.metrics import WorkerMetrics
from stream.producer import PRODUCER_DEFAULTS
from stream.registry_log import KafkaRegistryArchive
from stream.replication import ReplicaBarrier
from stream.scoring import DeploymentSource, ModelFollower
from stream.topics import Topics
from stream.version_features import VersionFeatures
from stream.worker import Worker, WorkerConfig

log = logging.getLogger("driftline")


def redis_client(s: Settings) -> RedisClient:
    return s.redis_client(socket_timeout=10, connect_timeout=5)


def redis_address(s: Settings) -> str:
    """Host:port of Redis, for log lines (the URL may carry a password); a cluster's nodes."""
    from driftline.redis_cluster import cluster_url, is_cluster_url, parse_cluster_url

    if is_cluster_url(s.redis_url):
        url = parse_cluster_url(s.redis_url)
        return cluster_url(url.nodes, tls=url.tls)
    host, port = s.redis_host_port
    return f"{host}:{port}"


def replica_barrier(s: Settings) -> Callable[[], None] | None:
    """On a Redis Cluster: wait for a replica of every master before each commit (None: a single
    Redis, or ``redis_replica_wait_ms`` 0). See `stream.replication`."""
    from driftline.redis_cluster import is_cluster_url

    if not is_cluster_url(s.redis_url) or s.redis_replica_wait_ms == 0:
        return None  # no client made just to find out
    client = redis_client(s)
    assert isinstance(client, RedisCluster)
    return ReplicaBarrier(client, s.topic_prefix, s.redis_replica_wait_ms)


def redis_dependency(s: Settings, gauge: Gauge) -> Dependency:
    """Redis's outage state for one process, probed with PING (short timeouts: a probe fails fast)."""
    return Dependency("redis", redis_address(s), gauge, probe=redis_probe(s))


def redis_probe(s: Settings) -> Callable[[], object]:
    """PING on a client of its own with short timeouts: a probe fails fast while Redis is away.
    The client is made at the first probe (a cluster client reads the slot map when made)."""
    made: list[RedisClient] = []

    def probe() -> object:
        if not made:
            made.append(s.redis_client(socket_timeout=2, connect_timeout=2))
        return ping_every_master(made[0])()

    return probe


def ping_every_master(client: RedisClient) -> Callable[[], object]:
    """PING; on a Redis Cluster, every master: a dead master's slots are an outage until its replica
    took over (a failed PING also makes the client re-read the slot map, so the next one finds the
    promoted replica)."""
    if isinstance(client, RedisCluster):
        return lambda: client.ping(target_nodes=RedisCluster.PRIMARIES)
    return client.ping


class ModelEventPublisher:
    """Publishes registry lifecycle events to ``<prefix>.models`` (key = model name, compacted)."""

    def __init__(self, s: Settings) -> None:
        self.topic = Topics(s.topic_prefix).models
        self._producer = Producer({**s.kafka_client_config(), **PRODUCER_DEFAULTS, "linger.ms": 0})

    def __call__(self, event: ModelEvent) -> None:
        errors: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(
            self.topic,
            orjson.dumps(event.model_dump(mode="json")),
            event.name.encode(),
            on_delivery=on_delivery,
        )
        if self._producer.flush(15) or errors:
            # The registry (Redis) already holds the change; workers also poll it, so they
            # still converge. Say loudly that the notification was not sent.
            raise DriftlineError(
                f"{event.kind} {event.name}:{event.version} is saved, but publishing it to "
                f"{self.topic} failed: {'; '.join(errors) or 'not acknowledged'}"
            )


def registry_archive(s: Settings) -> KafkaRegistryArchive:
    """The registry's durable copy: the compacted ``<prefix>.registry`` topic."""
    return KafkaRegistryArchive(s.kafka_client_config(), Topics(s.topic_prefix).registry)


def registry_signer(s: Settings) -> MetadataSigner | None:
    """The signer of the registry key (`DRIFTLINE_REGISTRY_KEY`); None when no key is configured."""
    if s.registry_key is None:
        return None
    return MetadataSigner(s.registry_key.get_secret_value().encode())


def model_registry(s: Settings, publish: bool = True) -> ModelRegistry:
    """The registry; with `publish` (every writer), changes also go to ``<prefix>.models`` and to
    the durable copy. Readers (workers, joiner, API) skip both. With a registry key, writers sign
    and readers verify."""
    return ModelRegistry(
        redis_client(s),
        namespace=s.topic_prefix,
        on_event=ModelEventPublisher(s) if publish else None,
        durable=registry_archive(s) if publish else None,
        keep_archived=s.registry_keep_archived,
        max_events=s.registry_max_events,
        signer=registry_signer(s),
    )


def feature_view(s: Settings) -> FeatureView | None:
    """The settings' default view (`DRIFTLINE_FEATURE_VIEW`): built-in "fraud", a YAML file, or
    None ("none"). It serves only versions that recorded no view of their own."""
    return parse_view(s.feature_view, "feature_view")[0]


def online_store(s: Settings, view: FeatureView) -> OnlineStore:
    return OnlineStore(redis_client(s), s.topic_prefix, view, state_cache=s.feature_state_cache)


def drift_config(s: Settings) -> DriftConfig:
    return DriftConfig(
        window_seconds=s.drift_window_seconds,
        allowed_lateness=s.drift_allowed_lateness,
        ks_sample_rate=s.drift_ks_sample_rate,
        cooldown_seconds=s.drift_cooldown_seconds,
        close_timeout_seconds=s.drift_close_timeout_seconds,
        min_window_events=s.drift_min_window_events,
        incidents=incident_config(s),
    )


def incident_config(s: Settings) -> IncidentConfig:
    """The incident rules of workers and the outcome joiner (one book per version: the same rules)."""
    return IncidentConfig(
        open_warnings=s.incident_open_warnings,
        resolve_windows=s.incident_resolve_windows,
        window_seconds=s.drift_window_seconds or 300.0,
        update_interval_seconds=s.incident_update_interval_seconds,
    )


def input_limits(s: Settings) -> InputLimits:
    return InputLimits(
        max_event_bytes=s.max_event_bytes,
        max_features=s.max_features,
        max_string_length=s.max_string_length,
        max_future_seconds=s.max_future_seconds,
        dead_letter_keep_bytes=s.dead_letter_keep_bytes,
    )


def build_worker(s: Settings, cfg: WorkerConfig, metrics: WorkerMetrics | None = None) -> Worker:
    topics = Topics(s.topic_prefix)
    cfg = dataclasses.replace(cfg, limits=input_limits(s))
    metrics = metrics or WorkerMetrics()
    registry: DeploymentSource = model_registry(s, publish=False)
    signer = registry_signer(s)
    if signer is not None:  # a forged version is refused, loudly, and the last good one serves on
        alarm = SignatureAlarm(s.kafka_client_config(), topics.models, metrics.registry, cfg.worker_id)
        registry = GuardedRegistry(model_registry(s, publish=False), signer, alarm)
    follower = ModelFollower(
        registry,
        cfg.model,
        s.kafka_client_config(),
        topics.models,
        missing_gauge=metrics.metadata_missing,
    )
    view = feature_view(s)  # for versions that recorded no view of their own
    # Each version is served through its own feature view (a promotion can change it).
    features = VersionFeatures(lambda meta: view_of(meta, view), lambda v: online_store(s, v), topics.events)
    drift = None
    if s.drift_window_seconds:
        # Raw event features + score (the default for versions without a recorded view).
        monitored = set(view.passthrough) if view is not None else None
        drift = DriftStage(
            redis_client(s),
            s.topic_prefix,
            metrics.registry,
            drift_config(s),
            monitored=monitored,
            worker_id=cfg.worker_id,
        )
    redis_dep = redis_dependency(s, metrics.dependency_up)
    return Worker(
        cfg,
        s.kafka_client_config(),
        topics,
        follower,
        features=features,
        metrics=metrics,
        drift=drift,
        redis=redis_dep,
        replicated=replica_barrier(s),
    )


class RedisDriftReader:
    """The latest drift statistics the workers recorded (``<ns>:drift:<model>:<version>:~latest``),
    for every registered version, in one round trip after the registry's."""

    def __init__(self, client: RedisClient, namespace: str, registry: ModelRegistry) -> None:
        self.r = client
        self.namespace = namespace
        self.registry = registry

    def __call__(self) -> list[DriftStat]:
        # Keys follow from the registry, so no SCAN over a keyspace full of entity hashes.
        versions = [
            (v.name, v.version) for name in self.registry.names() for v in self.registry.versions(name)
        ]
        pipe = self.r.pipeline(transaction=False)
        for name, version in versions:
            pipe.hgetall(latest_key(self.namespace, name, version))
        stats: list[DriftStat] = []
        for (name, version), fields in zip(versions, pipe.execute(), strict=True):
            for raw in fields.values():
                try:
                    w = WindowStat.model_validate_json(raw)
                except ValidationError:
                    log.warning("skipping a malformed drift statistic of %s:%s", name, version)
                    continue
                stats.append(DriftStat(model=name, version=version, **w.model_dump()))
        return stats


def registered_versions(registry: ModelRegistry) -> list[tuple[str, int]]:
    """Every registered (model, version): the keys of per-version families follow from it."""
    return [(v.name, v.version) for name in registry.names() for v in registry.versions(name)]


class RedisAlertReader:
    """Recent alerts of every registered version (``{<ns>:drift:<m>:<v>}:~alerts``, the last
    1,000 of each), newest first, filtered."""

    def __init__(self, client: RedisClient, namespace: str, registry: ModelRegistry) -> None:
        self.r = client
        self.namespace = namespace
        self.registry = registry

    def __call__(self, since: float | None, severity: str | None) -> list[dict[str, Any]]:
        out = []
        for raw in recent_alerts(self.r, self.namespace, registered_versions(self.registry)):
            try:
                alert = DriftAlert.model_validate_json(raw)
            except ValidationError:
                log.warning("skipping a malformed alert of %s", self.namespace)
                continue
            if since is not None and alert.ts.timestamp() < since:
                continue
            if severity is not None and alert.severity != severity:
                continue
            out.append(alert.model_dump(mode="json"))
        return out


class RedisIncidentReader:
    """Every incident's latest state, of every registered version
    (``{<ns>:drift:<m>:<v>}:~incidents``, written with each decision)."""

    def __init__(self, client: RedisClient, namespace: str, registry: ModelRegistry) -> None:
        self.r = client
        self.namespace = namespace
        self.registry = registry

    def __call__(self) -> list[dict[str, Any]]:
        out = []
        for raw in all_incidents(self.r, self.namespace, registered_versions(self.registry)):
            try:
                out.append(DriftIncident.model_validate_json(raw).model_dump(mode="json"))
            except ValidationError:
                log.warning("skipping a malformed incident of %s", self.namespace)
        return out


def build_api(s: Settings, model: str = "fraud") -> FastAPI:
    """The HTTP API over Redis (registry, online features, drift, alerts); Kafka only for /readyz."""
    # Short timeouts: a request or probe fails fast when Redis is gone instead of hanging.
    client = s.redis_client(socket_timeout=5, connect_timeout=1)
    probe = s.redis_client(socket_timeout=1, connect_timeout=1)
    # Read-only here (nothing to publish); verifies signatures with a registry key.
    registry = ModelRegistry(client, namespace=s.topic_prefix, signer=registry_signer(s))
    view = feature_view(s)
    admin = AdminClient(s.kafka_client_config())

    prometheus = CollectorRegistry()
    gauge = dependency_gauge(prometheus)
    redis_dep = Dependency("redis", redis_address(s), gauge, probe=ping_every_master(probe))
    kafka_dep = Dependency(
        "kafka", s.kafka_bootstrap, gauge, probe=lambda: admin.list_topics(timeout=2)
    )  # list_topics raises KafkaException when no broker answers in time

    readers: dict[str, OnlineStore] = {}

    def features_of(meta: ModelVersion) -> OnlineStore | None:
        """The online store of the version's own view (a YAML view read once per definition)."""
        own = view_of(meta, view)
        if own is None:
            return None
        key = own.fingerprint()
        if key not in readers:
            readers[key] = OnlineStore(client, s.topic_prefix, own, state_cache=0)
        return readers[key]

    deps = ApiDeps(
        registry=registry,
        features_of=features_of,
        features=OnlineStore(client, s.topic_prefix, view, state_cache=0) if view is not None else None,
        drift=RedisDriftReader(client, s.topic_prefix, registry),
        alerts=RedisAlertReader(client, s.topic_prefix, registry),
        incidents=RedisIncidentReader(client, s.topic_prefix, registry),
        # Each probe also moves its dependency's gauge and logs the state change, once.
        checks={"redis": redis_dep.ensure, "kafka": kafka_dep.ensure},
        prometheus=prometheus,
        redis_down=redis_dep.down,
        token=s.api_token.get_secret_value() if s.api_token else None,
        model=model,
    )
    return create_app(deps)
