"""`driftline stack up | status | down` on a private stack (own ports, own data dir)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from driftline.stack import _alive, _port_open
from tests.helpers import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_twice_reuses_and_down_stops_everything(tmp_path: Path) -> None:
    kafka, controller, redis_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "DRIFTLINE_KAFKA_CONTROLLER_PORT": str(controller),
        "DRIFTLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DRIFTLINE_STACK_DIR": str(tmp_path / "stack"),
        "DRIFTLINE_KAFKA_HEAP": "256m",
        "COLUMNS": "200",
    }
    pid_files = [tmp_path / "stack" / "kafka.pid", tmp_path / "stack" / "redis.pid"]
    try:
        first = run_cli("stack", "up", env=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stderr and f"127.0.0.1:{kafka}" in first.stdout
        pids = [int(p.read_text()) for p in pid_files]
        assert all(_alive(pid) for pid in pids)

        second = run_cli("stack", "up", env=env)
        assert second.returncode == 0, second.stderr
        assert "started" not in second.stderr
        assert second.stderr.count("already running") == 2 and "(reused)" in second.stderr
        assert [int(p.read_text()) for p in pid_files] == pids  # same processes

        status = run_cli("stack", "status", env=env)
        assert status.returncode == 0 and status.stdout.count("running") == 2
    finally:
        down = run_cli("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert "kafka (pid" in down.stdout and "redis (pid" in down.stdout
    assert not any(_alive(pid) for pid in pids)
    assert not any(_port_open("127.0.0.1", port) for port in (kafka, controller, redis_port))
    assert not any(p.exists() for p in pid_files)

    after = run_cli("stack", "status", env=env)
    assert after.returncode == 1 and after.stdout.count("stopped") == 2
    assert run_cli("stack", "down", env=env).stdout.strip() == "nothing to stop"
