"""A grep over what CLI commands print: no configured secret ever appears, in banners, tables,
one-line errors or log lines (the shared stack is open, so the secrets configured here are
refused or unused; what matters is that none is echoed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import run_cli
from tests.private_stack import free_port

pytestmark = pytest.mark.integration

KAFKA_PW = "kafka-secret-4d2e61"
REDIS_PW = "redis-secret-9a8b7c"
TOKEN = "api-secret-0f1e2d"
SECRETS = (KAFKA_PW, REDIS_PW, TOKEN)


def _assert_clean(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, output


def test_cli_outputs_carry_no_secret(cli_env: dict[str, str]) -> None:
    kafka = {"sasl.username": "driftline", "sasl.password": KAFKA_PW}
    secret_env = {**cli_env, "DRIFTLINE_API_TOKEN": TOKEN, "DRIFTLINE_KAFKA_CONFIG": json.dumps(kafka)}
    url_with_password = f"redis://worker:{REDIS_PW}@127.0.0.1:{cli_env_port(cli_env)}/0"
    cases: list[tuple[dict[str, str], list[str], bool]] = [
        ({**secret_env, "DRIFTLINE_REDIS_URL": url_with_password}, ["models", "list"], False),
        (
            {**secret_env, "DRIFTLINE_REDIS_USERNAME": "worker", "DRIFTLINE_REDIS_PASSWORD": REDIS_PW},
            ["worker", "--metrics-port", "0"],
            False,
        ),
        ({**secret_env, "DRIFTLINE_REDIS_URL": url_with_password}, ["stack", "status"], False),
        (secret_env, ["topics", "list"], True),
    ]
    for env, args, succeeds in cases:
        result = run_cli(*args, env=env, timeout=120)
        _assert_clean(result.stdout + result.stderr)
        assert (result.returncode == 0) == succeeds, (args, result.stdout, result.stderr)
        if not succeeds and args[0] != "stack":
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("driftline: error: "), (args, result.stderr)
            assert "Redis" in lines[0], lines[0]
    refused = run_cli("models", "list", env={**secret_env, "DRIFTLINE_REDIS_URL": url_with_password})
    assert "redis://worker:***@127.0.0.1" in refused.stderr  # the address, without the password


def cli_env_port(env: dict[str, str]) -> str:
    return env["DRIFTLINE_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]


def test_api_banner_and_log_carry_no_secret(cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {**cli_env, "DRIFTLINE_API_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from driftline.cli import main; main()", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        assert any("token required" in line for line in seen), seen
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    _assert_clean("".join(seen) + rest)
