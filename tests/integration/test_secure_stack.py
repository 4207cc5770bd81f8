"""The secured stack (`driftline stack up --secure`): SASL_SSL Kafka (SCRAM-SHA-512), TLS-only
Redis with ACL users. Wrong credentials and clients without TLS fail with one line naming the
dependency and the cause, never a secret; the worker's Redis user cannot write a model version.
A private secured stack (never the shared one): started once for the module."""

from __future__ import annotations

import json
import logging
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from driftline.stack_security import StackSecrets
from driftline.wiring import build_api, model_registry
from stream.synthetic import DriftSchedule
from stream.topics import Topics, create_topics
from tests.helpers import consume_all, run_cli
from tests.integration.loop_support import model_steps, running_loop
from tests.integration.test_retrain_loop import _produce as produce
from tests.integration.test_retrain_loop import _production as production
from tests.integration.worker_support import register, trained, wait_until
from tests.private_stack import PrivateStack, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    with PrivateStack(tmp_path_factory.mktemp("secure"), secure=True) as ps:
        yield ps


def secrets_of(ps: PrivateStack) -> list[str]:
    assert ps.stack.security is not None
    return ps.stack.security.secrets().values()


def _one_line(result: subprocess.CompletedProcess[str], secrets: list[str], *needles: str) -> str:
    out = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in out, out
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, out
    assert lines[0].startswith("driftline: error: ") and "Traceback" not in out, out
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_worker_and_api_users_cannot_write_the_registry(secure_stack: PrivateStack) -> None:
    ps = secure_stack
    admin = model_registry(ps.settings, publish=False)
    good = admin.register("fraud", trained().onnx_bytes, trained().features, stage="candidate")
    for role in ("worker", "outcomes", "api"):
        reader = model_registry(ps.role_settings(role), publish=False)
        assert reader.load("fraud", good.version)[0].ref == good.ref  # reading is fine
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.register("fraud", trained().onnx_bytes, trained().features)
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.promote("fraud", good.version)
    assert [v.version for v in admin.versions("fraud")] == [good.version]  # nothing slipped in
    worker = ps.role_settings("worker").redis_client()
    assert worker.hset(f"{ps.settings.topic_prefix}:fs:fraud:entity:card-1", "n", 1) == 1  # its own keys
    with pytest.raises(redis.exceptions.NoPermissionError):
        ps.role_settings("api").redis_client().hset(f"{ps.settings.topic_prefix}:fs:x", "n", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.flushall()


def test_wrong_credentials_and_plain_clients_are_one_line_errors(secure_stack: PrivateStack) -> None:
    ps = secure_stack
    env = ps.env("worker")
    secrets = secrets_of(ps)
    public = json.loads(env["DRIFTLINE_KAFKA_CONFIG"])
    wrong = "not-the-password-1234"
    wrong_password = {**public, "sasl.password": wrong}
    kafka_cases = [  # every consumer of the loop with a wrong password; clients without TLS
        (["worker"], wrong_password, "authentication failed"),
        (["outcomes"], wrong_password, "authentication failed"),
        (["retrainer"], wrong_password, "authentication failed"),
        (["worker"], {**public, "security.protocol": "SASL_PLAINTEXT"}, "security.protocol"),
        (["worker"], {}, "security.protocol"),  # a plaintext client
    ]
    for command, config, cause in kafka_cases:
        bad = {**env, "DRIFTLINE_KAFKA_CONFIG": json.dumps(config)}
        line = _one_line(run_cli(*command, "--metrics-port", "0", env=bad, timeout=120), secrets, cause)
        assert "Kafka" in line and wrong not in line
    plain = {k: v for k, v in env.items() if k != "DRIFTLINE_REDIS_TLS_CA"}  # a client without TLS
    plain["DRIFTLINE_REDIS_URL"] = env["DRIFTLINE_REDIS_URL"].replace("rediss://", "redis://")
    wrong_redis = {**env, "DRIFTLINE_REDIS_PASSWORD": wrong}
    cases = [
        (wrong_redis, ["models", "list"], "invalid username-password pair"),
        (wrong_redis, ["api", "--port", str(free_port())], "invalid username-password pair"),
        (plain, ["models", "list"], "TLS port"),
    ]
    for bad, command, cause in cases:
        line = _one_line(run_cli(*command, env=bad, timeout=120), secrets, "Redis", cause)
        assert wrong not in line


@pytest.mark.slow
def test_cli_stack_up_secure_prints_a_config_without_secrets(tmp_path: Path) -> None:
    kafka, redis_port = free_port(), free_port()
    env = {
        **PrivateStack(tmp_path).env(),
        "DRIFTLINE_STACK_DIR": str(tmp_path / "stack"),
        "DRIFTLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "DRIFTLINE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "DRIFTLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DRIFTLINE_KAFKA_HEAP": "384m",
    }
    try:
        up = run_cli("stack", "up", "--secure", env=env, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        stored = (tmp_path / "stack" / "secure" / "secrets.json").read_text()
        secrets = StackSecrets.model_validate_json(stored)
        for secret in secrets.values():
            assert secret not in up.stdout + up.stderr
        yaml_text = up.stdout.split("# driftline.yaml", 1)[1]
        assert (
            "security.protocol: SASL_SSL" in yaml_text and f"rediss://127.0.0.1:{redis_port}/0" in yaml_text
        )
        worker_env = (tmp_path / "stack" / "secure" / "secrets" / "worker.env").read_text()
        assert "DRIFTLINE_REDIS_USERNAME='worker'" in worker_env
        assert secrets.redis["worker"].get_secret_value() in worker_env
        status = run_cli("stack", "status", "--secure", env=env, timeout=120)
        assert status.returncode == 0 and status.stdout.count("running") == 2, status.stdout
    finally:
        down = run_cli("stack", "down", env=env, timeout=120)
    assert down.returncode == 0 and "kafka" in down.stdout and "redis" in down.stdout, down.stdout


@pytest.mark.slow
def test_the_loop_runs_on_the_secured_stack(
    secure_stack: PrivateStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """produce -> worker -> outcomes -> error-rate alert -> the Faust retrainer -> canary ->
    promotion, every component with its own users over SASL_SSL and TLS; the versions the
    retrainer registers are signed; no log line of it carries a secret."""
    ps = secure_stack
    loop = {
        "topic_prefix": f"loop-{uuid.uuid4().hex[:8]}",
        "retrain_recent_rows": 6000,
        "retrain_min_rows": 2000,
        "canary_fraction": 0.5,
        "rollout_min_outcomes": 300,
        "retrain_cooldown_seconds": 3600.0,
        "drift_window_seconds": 0.0,  # concept drift only, as in test_retrain_loop
        "metrics_port": 0,
    }
    admin, worker_s, outcomes_s = (
        ps.role_settings(role).model_copy(update=loop) for role in ("driftline", "worker", "outcomes")
    )
    topics = Topics(admin.topic_prefix)
    create_topics(AdminClient(admin.kafka_client_config()), topics, partitions=6)
    register(admin)  # production v1, signed with the stack's registry key
    registry = model_registry(admin, publish=False)
    log = tmp_path / "retrainer.log"
    with caplog.at_level(logging.INFO), running_loop(admin, log, worker_s, outcomes_s):
        produce(admin, 12_000, seed=21, schedule=DriftSchedule(concept_at=4_000), start_ts=1.7e9)
        wait_until(lambda: registry.deployment("fraud").canary is not None, timeout=300, every=1.0)
        produce(admin, 6_000, seed=22, schedule=DriftSchedule(concept_at=0), start_ts=1.7e9 + 10_000)
        wait_until(lambda: production(registry) == 2, timeout=300, every=1.0)
    steps = model_steps(admin)
    kinds = Counter(e["kind"] for e in steps)
    assert kinds["retrain_started"] == 1 and kinds["retrain_finished"] == 1, kinds
    assert [d["detail"]["action"] for d in steps if d["kind"] == "rollout_decided"] == ["promote"]
    assert registry.load("fraud")[0].signature  # the retrainer signed what it registered
    alerts = [r.json() for r in consume_all(admin, topics.signals, 1, 10)]
    assert any(a["detector"] == "error_rate" for a in alerts), alerts
    # The API, as its read-only user: ready (Redis, Kafka over SASL_SSL, the signed model) and scoring.
    api = TestClient(build_api(ps.role_settings("api").model_copy(update=loop)))
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["model fraud"] == "ok: fraud:2", ready.text
    scored = api.post("/predict", json={"entity_id": "card-000001", "features": {}})
    assert scored.status_code == 200 and scored.json()["version"] in (1, 2), scored.text
    everything = caplog.text + log.read_text()
    for secret in secrets_of(ps):
        assert secret not in everything
    assert "REFUSING" not in everything and "NOPERM" not in everything


@pytest.mark.slow
def test_cli_commands_work_on_the_secured_stack_and_print_no_secret(
    secure_stack: PrivateStack, tmp_path: Path
) -> None:
    """The CLI by configuration only (the `driftline` role's variables), on a prefix of its own."""
    ps = secure_stack
    env = {**ps.env("driftline"), "DRIFTLINE_TOPIC_PREFIX": f"cli-{uuid.uuid4().hex[:8]}"}
    secrets = secrets_of(ps)
    commands: list[tuple[list[str], int]] = [
        (["topics", "create"], 0),
        (["train", "--synthetic", "--n", "2000"], 0),  # registers production, signed
        (["models", "list"], 0),
        (["models", "show", "fraud"], 0),
        (["produce", "--synthetic", "fraud", "--n", "300"], 0),
        (["tail", "events", "--from-beginning", "--max", "1"], 0),
        (["topics", "list"], 0),
        (["alerts", "tail", "--from-beginning", "--idle-timeout", "2"], 0),
        (["features", "get", "card-000001"], 1),  # no worker ran: none yet (one line)
        (["report", "--out", str(tmp_path / "report.html")], 0),
    ]
    for args, code in commands:
        result = run_cli(*args, env=env, timeout=300)
        out = result.stdout + result.stderr
        assert result.returncode == code, (args, out)
        assert "Traceback" not in out, (args, out)
        for secret in secrets:
            assert secret not in out, (args, out)
    assert (tmp_path / "report.html").stat().st_size > 0
