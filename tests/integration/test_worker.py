"""The streaming worker against the real broker and Redis."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict

import orjson
import pytest

from driftline.settings import Settings
from inference.routing import entity_buckets
from stream.dead_letter import DeadLetter
from stream.predictions import Prediction
from stream.topics import Topics
from tests.helpers import committed_total, consume_all, run_cli, topic_size
from tests.integration.worker_support import (
    dlq,
    drain,
    predictions,
    produce_events,
    produce_raw,
    register,
    registry,
    served_counts,
    start_worker,
    stop_when_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

INVALID: list[tuple[str, bytes, str]] = [
    ("bad-json", b"{not json at all", "invalid_json"),
    ("bad-bytes", b"\xff\xfe\x00binary", "invalid_json"),
    ("bad-missing", b'{"event_id":"x1","ts":"2026-01-01T00:00:00Z","features":{}}', "schema_missing"),
    (
        "bad-type",
        b'{"event_id":"x2","entity_id":"e","ts":"2026-01-01T00:00:00Z","features":{"amount":[1,2]}}',
        "schema_",
    ),
    ("bad-ts", b'{"event_id":"x3","entity_id":"e","ts":"someday","features":{}}', "schema_"),
    ("bad-null", b"null", "schema_"),
]


@pytest.mark.slow
def test_50k_events_one_prediction_each_and_invalid_ones_in_dlq(own_settings: Settings) -> None:
    s = own_settings
    v1 = register(s)
    n = 50_000
    produce_raw(s, [(key, value) for key, value, _ in INVALID[:3]])
    produce_events(s, n)
    produce_raw(s, [(key, value) for key, value, _ in INVALID[3:]])

    running = start_worker(s, exit_when_idle=4.0, batch_size=1000)
    drain(s, running)

    preds = predictions(s, n)
    counts = served_counts(preds)
    assert len(counts) == n, f"{n - len(counts)} events without a prediction"
    assert max(counts.values()) == 1, "an event was predicted twice"
    assert len(preds) == n  # no shadow, no extras
    sample = Prediction.model_validate(preds[0])  # the documented contract
    assert (sample.model, sample.version, sample.arm, sample.served) == (
        "fraud",
        v1.version,
        "production",
        True,
    )
    assert 0.0 <= sample.score <= 1.0 and sample.predicted in (0, 1)
    assert all(0 <= p["score"] <= 1 for p in preds)

    letters = [DeadLetter.model_validate_json(r.value) for r in dlq(s, len(INVALID))]
    assert len(letters) == len(INVALID)
    by_key = {letter.key: letter for letter in letters}
    for key, value, code in INVALID:
        letter = by_key[key]
        assert letter.original() == value  # the original bytes, intact
        assert base64.b64decode(letter.original_b64) == value
        assert letter.reason_code.startswith(code), (key, letter.reason_code)
        assert letter.reason and "\n" not in letter.reason
        assert letter.source_topic == Topics(s.topic_prefix).events
        assert letter.source_offset >= 0 and 0 <= letter.source_partition < 6
    assert "entity_id" in by_key["bad-missing"].reason
    assert "features.amount" in by_key["bad-type"].reason

    metrics = running.worker.metrics
    assert metrics.consumed._value.get() == n + len(INVALID)
    assert metrics.processed.labels("dlq")._value.get() == len(INVALID)


def test_two_workers_split_partitions_and_cover_every_event(own_settings: Settings) -> None:
    s = own_settings
    register(s)
    a = start_worker(s, worker_id="a", exit_when_idle=6.0, batch_size=200)
    b = start_worker(s, worker_id="b", exit_when_idle=6.0, batch_size=200)
    wait_until(lambda: bool(a.worker.assigned) and bool(b.worker.assigned))
    n = 12_000
    produce_events(s, n, rate=6000)
    drain(s, a, b)
    counts = served_counts(predictions(s, n))
    assert len(counts) == n  # the union has no gaps
    assert max(counts.values()) == 1
    consumed = [w.worker.metrics.consumed._value.get() for w in (a, b)]
    assert sum(consumed) == n and min(consumed) > 0, consumed


def _spawn_worker(s: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **(env or {}),
        "DRIFTLINE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": s.redis_url,
        "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
        "DRIFTLINE_DRIFT_WINDOW_SECONDS": str(s.drift_window_seconds),
        "DRIFTLINE_DRIFT_KS_SAMPLE_RATE": str(s.drift_ks_sample_rate),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from driftline.cli import main; main()",
            "worker",
            "--metrics-port",
            "0",
            *args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_sigkill_mid_stream_loses_nothing(own_settings: Settings, exactly_once: bool) -> None:
    s = own_settings
    register(s)
    n = 20_000
    extra = ["--exactly-once", "--worker-id", "w1"] if exactly_once else ["--worker-id", "w1"]
    first = _spawn_worker(s, "--batch-size", "200", *extra)
    producer = threading.Thread(target=produce_events, args=(s, n), kwargs={"rate": 4000})
    producer.start()
    topics = Topics(s.topic_prefix)
    # Kill it hard mid-stream, once some batches (far from all events) are committed.
    group = f"{s.topic_prefix}-worker"
    wait_until(lambda: committed_total(s, group, topics.events) >= 3000, 90)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # What the kill interrupted: committed work, and events read or waiting past the commit.
    committed = committed_total(s, group, topics.events)
    written = topic_size(s, topics.predictions)  # at-least-once: every prediction the first one wrote
    assert 0 < committed < min(topic_size(s, topics.events), n), "the kill landed mid-stream"
    second = _spawn_worker(s, "--batch-size", "200", *extra)
    producer.join(60)
    rc, err = stop_when_committed(s, second, timeout=180)  # the whole stream is in the topic now
    assert rc == 0, err

    counts = served_counts(predictions(s, n))
    assert len(counts) == n, f"{n - len(counts)} events lost"
    duplicates = sum(c - 1 for c in counts.values())
    if exactly_once:
        assert duplicates == 0  # read_committed sees each prediction once
    else:
        # Only what the first worker wrote past its last commit is scored again.
        uncommitted = written - committed
        print(f"at-least-once: {duplicates} duplicate predictions after SIGKILL ({uncommitted} uncommitted)")
        assert duplicates <= uncommitted


def test_hot_swap_then_sticky_canary(own_settings: Settings) -> None:
    s = own_settings.model_copy(update={"max_future_seconds": 20 * 365 * 86_400})  # events of 2030
    reg = registry(s)
    v1 = register(s)
    v2 = register(s, stage="candidate", seed=1)
    running = start_worker(s, batch_size=100)
    produce_events(s, 4000, rate=4000, entities=5000)
    wait_until(lambda: running.worker.metrics.consumed._value.get() >= 4000)
    reg.promote("fraud", v2.version)
    wait_until(lambda: running.worker.scorer is not None and running.worker.scorer.signature[0] == v2.ref, 30)
    produce_events(s, 4000, seed=2, rate=4000, entities=5000, start_ts=1.8e9)
    wait_until(lambda: running.worker.metrics.consumed._value.get() >= 8000)

    v3 = register(s, stage="candidate", seed=2)
    reg.canary("fraud", v3.version, 0.2)
    wait_until(lambda: running.worker.scorer is not None and running.worker.scorer.signature[1] == v3.ref, 30)
    produce_events(s, 20_000, seed=3, entities=5000, start_ts=1.9e9)
    wait_until(lambda: running.worker.metrics.consumed._value.get() >= 28_000, 90)
    running.stop()

    preds = predictions(s, 28_000)
    counts = served_counts(preds)
    assert len(counts) == 28_000 and max(counts.values()) == 1  # no gap, nothing twice

    # Per partition, in offset order: v1 ... v1 then v2 ... (a clean switch, never back).
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for p in preds:
        by_partition[p["source_partition"]].append((p["source_offset"], p["version"]))
    switched = 0
    for rows in by_partition.values():
        versions = [v for _, v in sorted(rows) if v in (v1.version, v2.version)]
        first_v2 = versions.index(v2.version) if v2.version in versions else len(versions)
        assert set(versions[:first_v2]) <= {v1.version} and set(versions[first_v2:]) <= {v2.version}
        switched += first_v2 < len(versions)
    assert switched == 6

    # Canary phase: each entity always on the same arm, ~20% of entities on the canary.
    canary_phase = [p for p in preds if p["ts"] >= "2030"]  # start_ts 1.9e9 = 2030-03
    arms: dict[str, set[str]] = defaultdict(set)
    for p in canary_phase:
        arms[p["entity_id"]].add(p["arm"])
    assert all(len(a) == 1 for a in arms.values()), "an entity moved between arms"
    canary_entities = [e for e, a in arms.items() if a == {"canary"}]
    share = len(canary_entities) / len(arms)
    assert 0.17 <= share <= 0.23, share
    assert all(p["version"] == v3.version for p in canary_phase if p["arm"] == "canary")
    # and it is exactly the hash rule: the same entities every time
    expected = {e for e, b in zip(arms, entity_buckets(list(arms)), strict=True) if b < 0.2}
    assert set(canary_entities) == expected


def test_shadow_scores_beside_production_without_serving(own_settings: Settings) -> None:
    s = own_settings
    register(s)
    v2 = register(s, stage="candidate", seed=1)
    registry(s).shadow("fraud", v2.version)
    running = start_worker(s, exit_when_idle=4.0)
    produce_events(s, 3000)
    drain(s, running)
    preds = predictions(s, 6000)
    served = [p for p in preds if p["served"]]
    shadow = [p for p in preds if p["shadow"]]
    assert len(served) == len(shadow) == 3000
    assert {p["version"] for p in shadow} == {v2.version} and not any(p["served"] for p in shadow)
    assert {p["event_id"] for p in served} == {p["event_id"] for p in shadow}


def test_tampered_model_is_refused_with_a_clear_error(
    own_settings: Settings, cli_env: dict[str, str]
) -> None:
    s = own_settings
    meta = register(s)
    from driftline.wiring import redis_client

    client = redis_client(s)
    keys = [k for k in client.scan_iter(f"*{s.topic_prefix}:*") if meta.sha256.encode() in k]
    assert keys, "artifact key not found"
    for key in keys:
        data = client.get(key)
        if isinstance(data, bytes) and len(data) > 100:
            client.set(key, data[:-8] + b"\x00" * 8)
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix}
    result = run_cli("worker", "--metrics-port", "0", "--exit-when-idle", "1", env=env, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("driftline: error: ") and "sha256" in last and meta.ref in last
    orjson.dumps(last)  # one printable line


def test_worker_exits_cleanly_on_sigterm(own_settings: Settings) -> None:
    s = own_settings
    register(s)
    proc = _spawn_worker(s, "--worker-id", "term")
    produce_events(s, 2000)
    wait_until(lambda: topic_size(s, Topics(s.topic_prefix).predictions) >= 2000, 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert Counter(served_counts(predictions(s, 2000)).values()) == {1: 2000}


def test_metrics_endpoint_exposes_the_worker(own_settings: Settings) -> None:
    import socket
    import urllib.request

    s = own_settings
    v1 = register(s)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    running = start_worker(s)
    running.worker.metrics.serve(port)
    produce_events(s, 1500)
    produce_raw(s, [("bad", b"nope")])
    wait_until(lambda: running.worker.metrics.consumed._value.get() >= 1501)
    scraped: list[str] = []

    def lag_refreshed() -> bool:  # the consumer-lag gauge refreshes once a second
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            scraped.append(response.read().decode())
        return 'driftline_consumer_lag{partition="0"} 0.0' in scraped[-1]

    wait_until(lag_refreshed, timeout=30)
    body = scraped[-1]
    running.stop()
    version = str(v1.version)
    for line in (
        "driftline_events_consumed_total 1501.0",
        'driftline_events_processed_total{outcome="ok"} 1500.0',
        'driftline_dlq_total{reason="invalid_json"} 1.0',
        f'driftline_predictions_total{{arm="production",model="fraud",version="{version}"}} 1500.0',
        f'driftline_model_info{{name="fraud",stage="production",version="{version}"}} 1.0',
    ):
        assert line in body, line
    for name in (
        "driftline_batch_size_bucket",
        "driftline_batch_latency_seconds_bucket",
        "driftline_event_lag_seconds_bucket",
        "driftline_inference_seconds_bucket",
        'driftline_consumer_lag{partition="0"} 0.0',
    ):
        assert name in body, name


def test_covariate_drift_raises_one_alert_per_drifted_feature(own_settings: Settings) -> None:
    from rich.console import Console

    from detectors.alerts import DriftAlert
    from driftline.produce import produce_generated
    from stream.synthetic import DRIFTED_FEATURES, DriftSchedule

    # 2 events per second of event time: windows of 1000 s hold ~2,000 events; the drift starts
    # at event 10,000, about 5,000 s in, on a window boundary.
    s = own_settings.model_copy(update={"drift_window_seconds": 1000.0, "drift_ks_sample_rate": 1.0})
    register(s)
    running = start_worker(s, exit_when_idle=4.0)
    start = 1.7e9
    tally = produce_generated(
        s, 20_000, 0, seed=9, entities=1000, schedule=DriftSchedule(covariate_at=10_000),
        label_delay=10, start_ts=start, console=Console(quiet=True),
    )  # fmt: skip
    assert tally.failed == 0
    drain(s, running)
    alerts = [
        DriftAlert.model_validate_json(r.value) for r in consume_all(s, Topics(s.topic_prefix).signals, 6, 20)
    ]
    features = [a.feature for a in alerts]
    critical = [a.feature for a in alerts if a.severity == "critical"]
    # One drift, one critical alert per feature; at most a warning may precede it (escalation).
    assert len(critical) == len(set(critical)) == len(set(features)), alerts
    assert len(features) <= 2 * len(set(features)), alerts
    assert set(DRIFTED_FEATURES) <= set(features)  # every drifted input is named
    assert set(features) <= set(DRIFTED_FEATURES) | {"merchant_category", "__score__"}  # and nothing else
    for a in alerts:
        assert a.window_end_ts > start + 4_900, f"alert before the drift: {a}"  # no false alarm
        assert a.model == "fraud" and a.message
    metrics = running.worker.metrics.registry
    assert metrics.get_sample_value(
        "driftline_drift_alerts_total", {"severity": "critical", "detector": "ks"}
    ) or metrics.get_sample_value("driftline_drift_alerts_total", {"severity": "critical", "detector": "psi"})
    drifted = next(iter(DRIFTED_FEATURES))
    psi = metrics.get_sample_value("driftline_psi", {"model": "fraud", "version": "1", "feature": drifted})
    assert psi is not None and psi > 0.2
    p_value = metrics.get_sample_value(
        "driftline_ks_pvalue", {"model": "fraud", "version": "1", "feature": drifted}
    )
    assert p_value is not None and p_value < 1e-6
