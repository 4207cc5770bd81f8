"""Driftline settings: environment variables (``DRIFTLINE_*``) over an optional YAML file.

Precedence, highest first: explicit keyword arguments, environment variables, the YAML file
named by ``DRIFTLINE_CONFIG`` (default ``./driftline.yaml`` when it exists), built-in defaults.

>>> s = Settings(topic_prefix="demo")
>>> s.kafka_bootstrap
'127.0.0.1:9092'
>>> s.kafka_client_config()["bootstrap.servers"]
'127.0.0.1:9092'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

KafkaValue = str | int | float | bool

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "driftline"


def config_file() -> Path:
    """The YAML settings file: ``$DRIFTLINE_CONFIG`` or ``./driftline.yaml``."""
    return Path(os.environ.get("DRIFTLINE_CONFIG", "driftline.yaml"))


class Settings(BaseSettings):
    """Everything a Driftline process needs to find the Kafka cluster and Redis."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Passed verbatim to every confluent-kafka client, e.g. for a secured cluster:
    # DRIFTLINE_KAFKA_CONFIG='{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}'
    kafka_config: dict[str, KafkaValue] = Field(default_factory=dict)
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = "driftline"
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)

    # The feature view of model versions that recorded none of their own (registered before
    # versions recorded their view): "fraud" (built in), a path to a YAML FeatureView, or "none".
    feature_view: str = "fraud"
    # Entity states a worker keeps in memory after writing them, so most batches skip reading
    # them back from Redis (0 = off; about 2.6 kB each for the fraud view).
    feature_state_cache: int = Field(10_000, ge=0)

    # Drift detectors in the worker: tumbling event-time windows merged across workers, in
    # seconds (0 = no drift monitoring); how late a partition may be before a window closes; the
    # share of events sampled for the KS test; no second alert per feature within the cooldown.
    drift_window_seconds: float = Field(300.0, ge=0)
    drift_allowed_lateness: float = Field(30.0, ge=0)
    drift_ks_sample_rate: float = Field(0.05, ge=0, le=1)
    drift_cooldown_seconds: float = Field(3600.0, ge=0)
    # A merged window claimed by a worker that has not published its alerts this long after is
    # taken over and published by another worker.
    drift_close_timeout_seconds: float = Field(60.0, gt=0)

    # What the worker accepts as an event (bigger, wider or hostile ones are dead-lettered with
    # their own reason code; see the README's event contract): bytes per message, features per
    # event, characters per string feature, how far ahead of the wall clock an event time may
    # be; and how many bytes of a refused message its dead letter keeps.
    max_event_bytes: int = Field(1024 * 1024, ge=1024)
    max_features: int = Field(1000, ge=1)
    max_string_length: int = Field(16_384, ge=1)
    max_future_seconds: float = Field(86_400.0, ge=0)
    dead_letter_keep_bytes: int = Field(64 * 1024, ge=0, le=256 * 1024)

    # The loop after scoring: how long a prediction waits for its label (and a label for its
    # prediction); retraining (cooldown between jobs, newest labeled rows used, fewest accepted);
    # the canary's share of entities and the labeled outcomes it needs before a decision;
    # production's live error rate that triggers a retrain (None: only drift alerts do).
    label_wait_seconds: int = Field(3600, ge=1)
    retrain_cooldown_seconds: float = Field(1800.0, ge=0)
    retrain_recent_rows: int = Field(20_000, ge=10)
    retrain_min_rows: int = Field(1000, ge=10)
    retrain_older_share: float = Field(0.0, ge=0)  # older rows added, as a share of the recent ones
    retrain_estimator: Literal["logreg", "gbt"] = "logreg"
    rollout_mode: Literal["canary", "shadow"] = "canary"  # how a retrained candidate is tried
    canary_fraction: float = Field(0.2, gt=0, lt=1)
    rollout_min_outcomes: int = Field(300, ge=1)
    max_error_rate: float | None = Field(None, gt=0, lt=1)

    # The model registry: archived versions that keep their artifact (older ones keep metadata and
    # events only; production, canary, shadow and the previous production always keep theirs),
    # and lifecycle events kept per model (in Redis and in the durable copy on <prefix>.registry).
    registry_keep_archived: int = Field(5, ge=0)
    registry_max_events: int = Field(1000, ge=1)
    # Outages and liveness: a worker batch running longer than this exits the worker (status 75)
    # for its supervisor to restart it (0 = no watchdog); the metrics server's /healthz fails when
    # no batch completed for liveness_seconds while partitions have lag (0 = always healthy).
    batch_deadline_seconds: float = Field(120.0, ge=0)
    liveness_seconds: float = Field(300.0, ge=0)

    # Prometheus metrics of the worker/retrainer processes, and the HTTP API.
    metrics_port: int = Field(9108, ge=0, le=65535)  # 0 = no metrics endpoint
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # Bearer token the HTTP API requires on every route but /healthz and /readyz (None: open).
    api_token: str | None = None

    # Local stack (`driftline stack ...`): where jars are cached and where data and pid files live.
    cache_dir: Path = DEFAULT_CACHE_DIR
    stack_dir: Path = DEFAULT_CACHE_DIR / "stack"
    kafka_controller_port: int | None = None  # default: Kafka port + 1
    kafka_heap: str = "512m"

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not value or not set(value) <= allowed:
            raise ValueError("topic_prefix may only contain letters, digits, '.', '_' and '-'")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file())
        return (init_settings, env_settings, yaml_source)

    def kafka_client_config(self, **overrides: KafkaValue) -> dict[str, Any]:
        """confluent-kafka configuration: bootstrap + pass-through settings + overrides.

        Every client logs through Python logging (`stream.client_logs`), not to stderr."""
        from stream.client_logs import client_log_config

        return {
            "bootstrap.servers": self.kafka_bootstrap,
            **client_log_config(),
            **self.kafka_config,
            **overrides,
        }

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port or 9092)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        url = urlparse(self.redis_url)
        return url.hostname or "127.0.0.1", url.port or 6379
