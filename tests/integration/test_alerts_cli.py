"""`driftline alerts tail` as a user runs it: incidents by default, every signal with --signals."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from detectors.alerts import DriftAlert
from detectors.incidents import IncidentBook
from detectors.signals import DriftSignal
from driftline.settings import Settings
from stream.topics import Topics
from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def test_alerts_tail_shows_incidents_and_signals(stack_settings: Settings, cli_env: dict[str, str]) -> None:
    s = stack_settings
    signal = DriftSignal(
        detector="psi", feature="amount", statistic=0.5, threshold=0.2, severity="critical",
        window_start_ts=1.7e9, window_end_ts=1.7e9 + 300, window_start_index=0, window_end_index=1,
        n_window=2000, n_reference=5000, message="amount: PSI 0.5 >= 0.2",
    )  # fmt: skip
    book = IncidentBook()
    [opened] = book.observe([signal], model="fraud", version=4)
    [resolved] = book.supersede(5)
    topics = Topics(s.topic_prefix)
    p = Producer(s.kafka_client_config())
    for e in (opened, resolved):
        p.produce(topics.alerts, e.model_dump_json().encode(), e.incident_id.encode())
    p.produce(
        topics.signals, DriftAlert.from_signal(signal, "fraud", 4).model_dump_json().encode(), b"fraud:amount"
    )
    assert p.flush(15) == 0

    tail = run_cli("alerts", "tail", "--from-beginning", "--idle-timeout", "3", "--max", "2", env=cli_env)
    assert tail.returncode == 0, tail.stderr
    lines = [line for line in tail.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, tail.stdout
    assert lines[0].startswith("opened") and "fraud:4" in lines[0] and opened.incident_id[:12] in lines[0]
    assert "covariate drift on amount" in lines[0]
    assert lines[1].startswith("resolved") and "superseded by version 5" in lines[1]

    signals = run_cli("alerts", "tail", "--signals", "--from-beginning", "--idle-timeout", "3", "--max", "1",
                      env=cli_env)  # fmt: skip
    assert signals.returncode == 0, signals.stderr
    assert "critical" in signals.stdout and "amount: PSI 0.5 >= 0.2" in signals.stdout
