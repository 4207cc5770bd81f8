"""Every failed start-up of a CLI command ends as one line on stderr and a non-zero exit: services
that do not answer (a free port where nothing listens; the shared stack is never stopped), ports
another process holds, missing models, unreadable files."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.settings import Settings
from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test listens on, so that a command asking for it finds it taken."""
    with socket.create_server(("", 0)) as sock:
        yield sock.getsockname()[1]


def _assert_one_line(env: dict[str, str], args: list[str], needle: str) -> None:
    result = run_cli(*args, env=env, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (args, result.stdout, result.stderr)
    assert len(lines) == 1, (args, result.stderr)
    assert lines[0].startswith("driftline: error: "), (args, lines)
    assert needle in lines[0], (args, lines[0])
    assert "Traceback" not in result.stderr and "%3|" not in result.stdout + result.stderr


NEEDS_KAFKA = [
    ["train", "--synthetic", "--n", "200"],
    ["worker", "--metrics-port", "0"],
    ["outcomes", "--metrics-port", "0"],
    ["retrainer", "--metrics-port", "0"],
    ["retrain", "fraud"],
    ["produce", "--synthetic", "fraud", "--n", "10"],
    ["tail", "events", "--max", "1"],
    ["topics", "list"],
    ["models", "promote", "fraud:1"],
    ["report"],
]


@pytest.mark.parametrize("args", NEEDS_KAFKA, ids=" ".join)
def test_unreachable_broker_at_start_up(cli_env: dict[str, str], args: list[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    env = {**cli_env, "DRIFTLINE_KAFKA_BOOTSTRAP": address}
    _assert_one_line(env, args, f"cannot reach Kafka at {address}")


NEEDS_REDIS = [
    ["train", "--synthetic", "--n", "200"],
    ["worker", "--metrics-port", "0"],
    ["models", "list"],
    ["features", "get", "card-1"],
    ["api", "--port", "1"],  # never reached: Redis is checked first
]


@pytest.mark.parametrize("args", NEEDS_REDIS, ids=" ".join)
def test_unreachable_redis_at_start_up(cli_env: dict[str, str], args: list[str]) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    _assert_one_line({**cli_env, "DRIFTLINE_REDIS_URL": url}, args, f"cannot reach Redis at {url}")


@pytest.mark.parametrize(
    "args", [["worker", "--metrics-port", "0"], ["features", "get", "card-1"]], ids=" ".join
)
def test_unreachable_redis_cluster_at_start_up(cli_env: dict[str, str], args: list[str]) -> None:
    url = f"redis+cluster://127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    _assert_one_line(
        {**cli_env, "DRIFTLINE_REDIS_URL": url}, args, f"cannot reach the Redis Cluster at {url}"
    )


@pytest.mark.parametrize("command", ["worker", "outcomes", "retrainer"])
def test_metrics_port_in_use(cli_env: dict[str, str], held_port: int, command: str) -> None:
    _assert_one_line(
        cli_env, [command, "--metrics-port", str(held_port)], f"cannot serve metrics on port {held_port}"
    )


def test_api_port_in_use(cli_env: dict[str, str], held_port: int) -> None:
    _assert_one_line(
        cli_env, ["api", "--host", "127.0.0.1", "--port", str(held_port)], f"127.0.0.1:{held_port}"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["models", "show", "nosuchmodel"],
        ["models", "promote", "nosuchmodel:1"],
        ["report", "--model", "nosuch"],
    ],
    ids=" ".join,
)
def test_missing_model(own_settings: Settings, cli_env: dict[str, str], args: list[str]) -> None:
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}
    _assert_one_line(env, args, "nosuch")


def test_unreadable_files(cli_env: dict[str, str], tmp_path: Path) -> None:
    binary = tmp_path / "events.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not onnx")
    cases = [
        (["produce", "--file", str(binary)], f"{binary}: not a UTF-8 text file"),
        (["train", "--file", str(binary), "--label", "y"], f"{binary}: not a UTF-8 text file"),
        (["produce", "--file", str(tmp_path)], str(tmp_path)),
        (["models", "register", str(tmp_path / "none.onnx"), "--name", "m", "--features", "a"], "none.onnx"),
        (["models", "register", str(onnx), "--name", "m", "--features", "a"], "not a loadable ONNX model"),
        (["worker"], "/nonexistent.yaml"),
    ]
    for args, needle in cases:
        env = {**cli_env, "DRIFTLINE_FEATURE_VIEW": "/nonexistent.yaml"} if args == ["worker"] else cli_env
        _assert_one_line(env, args, needle)
