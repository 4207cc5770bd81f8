"""Start-up checks: is the broker, is Redis reachable? One clear error instead of a client's
retry loop, its log lines, and a traceback."""

from __future__ import annotations

import logging
import os
import socket

import redis
from redis.exceptions import RedisClusterException

from driftline.errors import DriftlineError
from driftline.settings import Settings

CHECK_TIMEOUT = 3.0
HINT = "start the local stack with `driftline stack up`, or set DRIFTLINE_{}"


def require_kafka(s: Settings, timeout: float = CHECK_TIMEOUT) -> None:
    """A TCP connection to one of the bootstrap servers, then a metadata request through the
    configured security; or a DriftlineError naming them and the cause."""
    last = ""
    for server in s.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 9092)), timeout=timeout):
                pass
        except (OSError, ValueError) as exc:
            last = getattr(exc, "strerror", None) or str(exc)
            continue
        _require_kafka_handshake(s)
        return
    raise DriftlineError(
        f"cannot reach Kafka at {s.kafka_bootstrap} ({last}): {HINT.format('KAFKA_BOOTSTRAP')}"
    )


# What librdkafka's log lines say, read as the cause a person can act on.
_KAFKA_CAUSES = (
    ("authentication failed", "authentication failed: wrong sasl.username or sasl.password?"),
    ("sasl authentication error", "authentication failed: wrong sasl.username or sasl.password?"),
    ("ssl handshake failed", "TLS handshake failed: check ssl.ca.location and security.protocol"),
    ("certificate verify failed", "the broker's certificate does not verify against ssl.ca.location"),
    (
        "state apiversion_query",
        "the broker closed the connection: a TLS or SASL listener? check security.protocol",
    ),
    ("unsupported sasl mechanism", "the broker does not offer this sasl.mechanism"),
)


class _Capture(logging.Logger):
    """A logger for one probe client: keeps librdkafka's lines instead of printing them."""

    def __init__(self) -> None:
        super().__init__("driftline.kafka.probe")
        self.lines: list[str] = []

    def log(self, level: int, msg: object, *args: object, **_kw: object) -> None:
        self.lines.append(str(msg) % args if args else str(msg))


def _require_kafka_handshake(s: Settings, timeout: float = 10.0) -> None:
    """A metadata request through the configured security (TLS, SASL), or a DriftlineError
    that says what went wrong: a TCP port that answers may still refuse these credentials."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    capture = _Capture()
    errors: list[str] = []
    config = {
        **s.kafka_client_config(**{"socket.timeout.ms": 5000}),
        "logger": capture,
        "log_level": 6,  # info: librdkafka's reason for a failed handshake is logged at info
        "error_cb": lambda e: errors.append(str(e)),
    }
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout)
        return
    except KafkaException:
        admin.poll(0.5)  # serves the queued log lines and errors
    said = " ".join(capture.lines + errors).lower()
    cause = next((why for needle, why in _KAFKA_CAUSES if needle in said), "no answer to a metadata request")
    raise DriftlineError(f"cannot use Kafka at {s.kafka_bootstrap} ({cause})") from None


def require_redis(s: Settings, timeout: float = CHECK_TIMEOUT) -> None:
    """A PING answered by Redis at ``redis_url``, or a DriftlineError naming it."""
    try:
        client = s.redis_client(socket_timeout=timeout, connect_timeout=timeout)
    except RedisClusterException as exc:  # a cluster client reads the slot map at once
        last = str(exc).rsplit(": ", 1)[-1].split(". ")[0].rstrip(".")
        raise DriftlineError(
            f"cannot reach the Redis Cluster at {s.redis_display} (no startup node answered; last: "
            f"{last}): start the local cluster with `driftline stack up --redis-cluster`, or set "
            "DRIFTLINE_REDIS_URL"
        ) from None
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = str(exc).split(". ")[0].rstrip(".")
        tls = s.redis_tls_ca is not None or s.redis_url.startswith("rediss://")
        if isinstance(exc, redis.ConnectionError) and not tls and "reset by peer" in reason:
            reason += "; a TLS port? use rediss:// and DRIFTLINE_REDIS_TLS_CA"
        raise DriftlineError(
            f"cannot reach Redis at {s.redis_display} ({reason}): {HINT.format('REDIS_URL')}"
        ) from None
    finally:
        client.close()


def require(s: Settings, *services: str) -> Settings:
    """Check each of ``services`` ("kafka", "redis") and return ``s``."""
    if "kafka" in services:
        require_kafka(s)
    if "redis" in services:
        require_redis(s)
    return s


def require_free_port(port: int, what: str, option: str) -> None:
    """Fail early, with the option to change, if ``port`` (0: off) is taken on this host."""
    if not port:
        return
    try:
        with socket.create_server(("", port)):
            pass
    except OSError as exc:
        raise DriftlineError(
            f"cannot serve {what} on port {port} ({os.strerror(exc.errno) if exc.errno else exc}): "
            f"another process uses it; pick a free one with {option}"
        ) from None
