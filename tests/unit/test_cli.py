"""The CLI's error contract: a bad argument gives one line on stderr and a non-zero exit.
None of these reach a broker: they fail before any connection is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["produce"], "exactly one of --file PATH or --synthetic"),
        (["produce", "--synthetic", "fraud", "--n", "0"], "--n"),
        (["produce", "--synthetic", "fraud", "--drift", "sideways@5"], "bad drift spec"),
        (["produce", "--synthetic", "nope"], "unknown generator"),
        (["produce", "--synthetic", "fraud", "--rate", "fast"], "--rate"),
        (["tail"], "Missing argument 'topic'"),
        (["stack", "sideways"], "No such command"),
        (["no-such-command"], "No such command"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("driftline: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_malformed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = '{"entity_id":"u1","ts":"2026-01-01T00:00:00Z","amount":1.0}\n'
    path.write_text(good * 3 + '{"entity_id":"u1","ts":"2026-01-01T00:00:00Z","amount":\n' + good)
    # No broker at this address: the file is rejected before anything connects.
    result = run_cli("produce", "--file", str(path), env={"DRIFTLINE_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 1
    assert result.stderr.startswith(f"driftline: error: {path}:4: not valid JSON")
    assert "nothing was sent" in result.stderr


def test_missing_file_is_one_line() -> None:
    result = run_cli("produce", "--file", "/nonexistent.jsonl")
    assert result.returncode == 1
    assert result.stderr.strip() == "driftline: error: /nonexistent.jsonl: no such file"
