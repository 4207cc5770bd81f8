"""`driftline produce`, `tail` and `topics` as a user runs them, against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from driftline.settings import Settings
from stream.topics import TOPIC_CONFIGS, Topics
from tests.helpers import consume_all, run_cli

pytestmark = pytest.mark.integration


def test_produce_file_with_labels_then_tail_json(
    stack_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "mine.csv"
    rows = [f"user-{i % 7},2026-02-01T00:00:{i:02d}Z,{i * 1.5},{i % 2}" for i in range(40)]
    path.write_text("entity_id,ts,amount,fraud\n" + "\n".join(rows) + "\n")
    result = run_cli("produce", "--file", str(path), "--label-field", "fraud", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "sent 80, delivered 80, failed 0" in result.stdout

    topics = Topics(stack_settings.topic_prefix)
    events = [m.json() for m in consume_all(stack_settings, topics.events, 40)]
    labels = [m.json() for m in consume_all(stack_settings, topics.labels, 40)]
    mine = {e["event_id"]: e for e in events if e["event_id"].startswith("mine.csv:")}
    assert len(mine) == 40
    assert mine["mine.csv:3"]["features"] == {"amount": 1.5}
    assert {lab["event_id"]: lab["label"] for lab in labels}["mine.csv:3"] == 1

    tailed = run_cli("tail", "events", "--from-beginning", "--max", "5", "--json", env=cli_env)
    assert tailed.returncode == 0, tailed.stderr
    lines = [orjson.loads(line) for line in tailed.stdout.splitlines()]
    assert len(lines) == 5
    assert all(line["topic"] == topics.events for line in lines)
    assert all(line["key"] == line["value"]["entity_id"] for line in lines)


def test_malformed_file_sends_nothing(
    stack_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"entity_id":"bad-1","ts":"2026-01-01T00:00:00Z","x":1}\n'
        '{"entity_id":"bad-1","ts":"2026-01-01T00:00:00Z","x":[1]}\n'
    )
    result = run_cli("produce", "--file", str(path), env=cli_env)
    assert result.returncode == 1
    assert f"{path}:2: features.x" in result.stderr
    events = consume_all(stack_settings, Topics(stack_settings.topic_prefix).events, expected=0, timeout=3)
    assert not [m for m in events if m.key == b"bad-1"]


def test_topics_create_is_idempotent_and_list_shows_partitions(cli_env: dict[str, str]) -> None:
    again = run_cli("topics", "create", env=cli_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("exists") == len(TOPIC_CONFIGS) and "created" not in again.stdout
    listed = run_cli("topics", "list", env=cli_env)
    prefix = cli_env["DRIFTLINE_TOPIC_PREFIX"]
    for short in ("events", "labels", "predictions", "alerts", "models", "dlq", "outcomes", "retrain"):
        assert f"{prefix}.{short}" in listed.stdout
    assert "missing" not in listed.stdout


def test_tail_unknown_topic_is_one_line(cli_env: dict[str, str]) -> None:
    result = run_cli("tail", "no-such-topic-here", "--max", "1", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "driftline: error: topic 'no-such-topic-here' does not exist (run `driftline topics create`)"
    ]
