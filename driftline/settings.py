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

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from driftline.redaction import redact_url

if TYPE_CHECKING:
    from driftline.redis_keys import RedisClient

KafkaValue = str | int | float | bool
KafkaConfig = dict[str, KafkaValue | SecretStr]

# confluent-kafka properties that hold a secret: kept as SecretStr (never in a repr or a dump).
SECRET_KAFKA_KEYS = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "ssl.truststore.password",
    }
)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "driftline"


def _reveal(value: KafkaValue | SecretStr) -> KafkaValue:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def config_file() -> Path:
    """The YAML settings file: ``$DRIFTLINE_CONFIG`` or ``./driftline.yaml``."""
    return Path(os.environ.get("DRIFTLINE_CONFIG", "driftline.yaml"))


class Settings(BaseSettings):
    """Everything a Driftline process needs to find the Kafka cluster and Redis."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Passed verbatim to every confluent-kafka client, e.g. for a secured cluster:
    # DRIFTLINE_KAFKA_CONFIG='{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}'
    # Secret properties (`SECRET_KAFKA_KEYS`, e.g. sasl.password) are held as SecretStr.
    kafka_config: KafkaConfig = Field(default_factory=dict)
    # A password in the URL works, but is better given as redis_password (DRIFTLINE_REDIS_PASSWORD),
    # beside redis_username (an ACL user); rediss:// or redis_tls_ca (the CA file) means TLS.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls_ca: Path | None = None
    topic_prefix: str = "driftline"
    partitions: int = Field(6, ge=1)
    # Replicas of each topic `topics create` makes; -1: the cluster's default.replication.factor
    # (1 on the single-broker stack, 3 on `stack up --kafka-brokers 3`, whose min.insync.replicas
    # of 2 new topics inherit too).
    replication_factor: int = Field(-1, ge=-1)

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
    # A drift window also waits for this many events (a low-rate stream's windows merge until
    # they hold enough for PSI/KS to mean something; 0 = close on event time alone).
    drift_min_window_events: int = Field(500, ge=0)
    # Incidents (what `<prefix>.alerts` carries): warnings that open one (a critical always does),
    # drift windows every member must stay quiet before it resolves, and the least event time
    # between two `updated` events (escalations are sent at once).
    incident_open_warnings: int = Field(3, ge=1)
    incident_resolve_windows: int = Field(6, ge=1)
    incident_update_interval_seconds: float = Field(1800.0, ge=0)

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
    # A retrainer source partition with messages waiting and no progress this long is re-read
    # from its committed offset (a Faust consumer stall, see stream.consumer_stall).
    retrainer_stall_seconds: float = Field(30.0, gt=0)

    # The model registry: archived versions that keep their artifact (older ones keep metadata and
    # events only; production, canary, shadow and the previous production always keep theirs),
    # and lifecycle events kept per model (in Redis and in the durable copy on <prefix>.registry).
    registry_keep_archived: int = Field(5, ge=0)
    registry_max_events: int = Field(1000, ge=1)
    # The key that signs model metadata (HMAC-SHA256; at least 16 characters), kept outside Redis:
    # writers sign what they register, readers refuse what does not verify. None: unsigned (a
    # warning at start-up; anyone with Redis write access could then swap the served model).
    registry_key: SecretStr | None = Field(None, min_length=16)
    # Outages and liveness: a worker batch running longer than this exits the worker (status 75)
    # for its supervisor to restart it (0 = no watchdog); the metrics server's /healthz fails when
    # no batch completed for liveness_seconds while partitions have lag (0 = always healthy).
    batch_deadline_seconds: float = Field(120.0, ge=0)
    liveness_seconds: float = Field(300.0, ge=0)
    # On a Redis Cluster, a worker or outcome joiner commits a batch only once a replica of every
    # master acknowledged its writes (`stream.replication`), waiting up to this long (0 = off).
    redis_replica_wait_ms: int = Field(2000, ge=0)

    # Prometheus metrics of the worker/retrainer processes, and the HTTP API.
    metrics_port: int = Field(9108, ge=0, le=65535)  # 0 = no metrics endpoint
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # Bearer token the HTTP API requires on every route but /healthz and /readyz (None: open,
    # allowed only on a loopback address).
    api_token: SecretStr | None = None
    # HTTPS: the API's certificate chain and private key (PEM files); both or neither.
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None

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

    @field_validator("replication_factor")
    @classmethod
    def _replicas_or_broker_default(cls, value: int) -> int:
        if value == 0:
            raise ValueError("replication_factor is -1 (the broker's default) or at least 1")
        return value

    @field_validator("kafka_config")
    @classmethod
    def _kafka_secrets_are_secret(cls, value: KafkaConfig) -> KafkaConfig:
        return {
            k: SecretStr(str(v)) if k in SECRET_KAFKA_KEYS and not isinstance(v, SecretStr) else v
            for k, v in value.items()
        }

    @field_validator("api_token", "redis_password", "registry_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # An empty DRIFTLINE_API_TOKEN means no token, not "".
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if text == "" else value

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
            **{k: _reveal(v) for k, v in self.kafka_config.items()},
            **overrides,
        }

    def redis_client(self, socket_timeout: float = 10, connect_timeout: float = 5) -> RedisClient:
        """A Redis client for `redis_url` with the credentials and TLS settings: a
        ``RedisCluster`` for a ``redis+cluster://`` / ``rediss+cluster://`` URL
        (`driftline.redis_cluster`), a ``redis.Redis`` otherwise."""
        import redis

        from driftline.redis_cluster import is_cluster_url, parse_cluster_url

        extra: dict[str, Any] = {}
        if self.redis_username:
            extra["username"] = self.redis_username
        if self.redis_password is not None:
            extra["password"] = self.redis_password.get_secret_value()
        if is_cluster_url(self.redis_url):
            from redis.cluster import RedisCluster

            url = parse_cluster_url(self.redis_url)
            if url.username and "username" not in extra:
                extra["username"] = url.username
            if url.password is not None and "password" not in extra:
                extra["password"] = url.password.get_secret_value()
            if url.tls or self.redis_tls_ca is not None:
                extra["ssl"] = True
                if self.redis_tls_ca is not None:
                    extra["ssl_ca_certs"] = str(self.redis_tls_ca)
            return RedisCluster(
                startup_nodes=url.startup_nodes(),
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                **extra,
            )
        if self.redis_tls_ca is not None:
            extra["ssl_ca_certs"] = str(self.redis_tls_ca)
            if not self.redis_url.startswith("rediss://"):
                extra["connection_class"] = redis.SSLConnection
        return redis.Redis.from_url(
            self.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, **extra
        )

    @property
    def redis_display(self) -> str:
        """`redis_url` fit to print: its password, if any, replaced by ``***``."""
        return redact_url(self.redis_url)

    def secrets(self) -> list[str]:
        """Every secret these settings hold (passwords, tokens, keys), for scrubbing output."""
        found = [v.get_secret_value() for v in self.kafka_config.values() if isinstance(v, SecretStr)]
        for secret in (self.redis_password, self.api_token, self.registry_key):
            if secret is not None:
                found.append(secret.get_secret_value())
        password = urlparse(self.redis_url).password
        if password:
            found.append(password)
        return [s for s in found if s]

    def as_env(self) -> dict[str, str]:
        """These settings as DRIFTLINE_* variables, secrets revealed, for a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="python").items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = json.dumps({k: _reveal(v) for k, v in value.items()})
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"DRIFTLINE_{name.upper()}"] = str(value)
        return env

    def child_json(self) -> bytes:
        """These settings as JSON, secrets revealed, for a child process's stdin (never logged)."""
        data: dict[str, Any] = self.model_dump(mode="json")  # secrets masked here ...
        for name, value in self.model_dump(mode="python").items():  # ... and revealed here
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
            elif isinstance(value, dict):
                data[name] = {k: _reveal(v) for k, v in value.items()}
        return json.dumps(data).encode()

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "redis_url" else value

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port or 9092)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Redis's host and port (a Redis Cluster URL's first startup node)."""
        from driftline.redis_cluster import is_cluster_url, parse_cluster_url

        if is_cluster_url(self.redis_url):
            return parse_cluster_url(self.redis_url).nodes[0]
        url = urlparse(self.redis_url)
        return url.hostname or "127.0.0.1", url.port or 6379
