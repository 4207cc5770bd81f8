"""Start-up checks: is the broker, is Redis reachable? One clear error instead of a client's
retry loop, its log lines, and a traceback."""

from __future__ import annotations

import os
import socket

import redis

from driftline.errors import DriftlineError
from driftline.settings import Settings

CHECK_TIMEOUT = 3.0
HINT = "start the local stack with `driftline stack up`, or set DRIFTLINE_{}"


def require_kafka(s: Settings, timeout: float = CHECK_TIMEOUT) -> None:
    """A TCP connection to one of the bootstrap servers, or a DriftlineError naming them."""
    last = ""
    for server in s.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 9092)), timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            last = getattr(exc, "strerror", None) or str(exc)
    raise DriftlineError(
        f"cannot reach Kafka at {s.kafka_bootstrap} ({last}): {HINT.format('KAFKA_BOOTSTRAP')}"
    )


def require_redis(s: Settings, timeout: float = CHECK_TIMEOUT) -> None:
    """A PING answered by Redis at ``redis_url``, or a DriftlineError naming it."""
    client = s.redis_client(socket_timeout=timeout, connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = str(exc).split(". ")[0].rstrip(".")
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
