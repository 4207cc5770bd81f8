"""A private Kafka broker + redis-server for tests that stop, kill or flush a service.

The shared local stack (`driftline stack up`) serves every other test of the run, so a test that
restarts a broker, kills Redis or runs ``FLUSHALL`` gets its own services: the same jars and the
same Debian ``redis-server``, started by the same ``LocalStack`` code on free ports in a temporary
directory, and stopped (data removed) afterwards.

    with PrivateStack(tmp_path) as ps:
        s = ps.settings            # Settings pointing at the private broker and Redis
        ps.stop_kafka(); ps.start_kafka()
        ps.kill_redis(); ps.start_redis()

    with PrivateStack(tmp_path, secure=True) as ps:   # SASL_SSL Kafka, TLS-only Redis, ACL users
        s = ps.settings            # the CLI/retrainer user ("driftline"), every secret included
        w = ps.role_settings("worker")  # the worker's Redis user
        env = ps.env("worker")     # DRIFTLINE_* variables for a `driftline` child process
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType

from driftline.settings import Settings
from driftline.stack import LocalStack, _alive


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice), for a private service."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateStack:
    """One private single-node KRaft broker and one redis-server (AOF on), on free ports."""

    def __init__(
        self, directory: Path, topic_prefix: str | None = None, kafka: bool = True, secure: bool = False
    ) -> None:
        self.directory = directory
        self.with_kafka = kafka
        kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
        self.base = Settings(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            kafka_controller_port=controller_port,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            topic_prefix=topic_prefix or f"private-{uuid.uuid4().hex[:8]}",
            stack_dir=directory / "stack",
            kafka_heap="384m",
        )
        self.stack = LocalStack(self.base, log=lambda _m: None, secure=secure)
        self.settings = self.role_settings("driftline") if secure else self.base

    def role_settings(self, role: str) -> Settings:
        """The settings of one component (its own Redis user) on the secured stack."""
        assert self.stack.security is not None, "a plain private stack has no roles"
        return self.stack.security.client_settings(self.base, role)

    def env(self, role: str = "driftline") -> dict[str, str]:
        """DRIFTLINE_* variables for a `driftline` child process of `role` on this stack."""
        s = self.role_settings(role) if self.stack.security is not None else self.settings
        return {**os.environ, **s.as_env(), "COLUMNS": "200"}

    # ---- whole stack ----------------------------------------------------------------------
    def __enter__(self) -> PrivateStack:
        self.stack.root.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        if self.with_kafka:
            self.start_kafka()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stack.down(timeout=20)

    # ---- one service ----------------------------------------------------------------------
    def start_kafka(self, timeout: float = 120) -> None:
        self.stack._up_kafka(timeout)

    def start_redis(self, timeout: float = 60) -> None:
        self.stack._up_redis(timeout)

    def stop_kafka(self) -> None:
        """A clean broker shutdown (SIGTERM), as an operator's restart does."""
        self._signal(self.stack.kafka_pid(), "kafka", signal.SIGTERM)

    def kill_kafka(self) -> None:
        self._signal(self.stack.kafka_pid(), "kafka", signal.SIGKILL)

    def stop_redis(self) -> None:
        self._signal(self.stack.redis_pid(), "redis", signal.SIGTERM)

    def kill_redis(self) -> None:
        self._signal(self.stack.redis_pid(), "redis", signal.SIGKILL)

    def _signal(self, pid: int | None, name: str, sig: signal.Signals, timeout: float = 60) -> None:
        assert pid is not None, f"private {name} is not running"
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"private {name} (pid {pid}) did not stop"
        (self.stack.root / f"{name}.pid").unlink(missing_ok=True)
