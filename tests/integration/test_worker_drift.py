"""Drift windows through real workers: merged across workers, and surviving a SIGKILL."""

from __future__ import annotations

import json
import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import redis
from rich.console import Console

from detectors.alerts import DriftAlert
from detectors.incidents import DriftIncident, IncidentEvent
from detectors.psi import PSIWindow, psi_from_counts
from detectors.window_store import FAULT_ENV, WINDOWED_DETECTORS
from driftline.produce import produce_generated
from driftline.redis_keys import RedisClient
from driftline.settings import Settings
from driftline.wiring import redis_client
from stream.drift import incidents_key, to_reference
from stream.synthetic import DRIFTED_FEATURES, DriftSchedule
from stream.topics import Topics, create_topics, delete_topics
from tests.helpers import committed_total, consume_all
from tests.integration.test_worker import _spawn_worker
from tests.integration.worker_support import drain, register, start_worker, wait_until

# CPU-heavy (up to three workers at once): under xdist, never beside the other heavy tests.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("cpu-heavy")]

START = 1.7e9  # aligned to the 1000 s windows
WINDOW = 1000.0  # event-time seconds: the generator makes 2 events/s, so ~2,000 events a window


@contextmanager
def topics_of(s: Settings) -> Iterator[None]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(s.kafka_client_config())
    create_topics(admin, Topics(s.topic_prefix), partitions=6)
    try:
        yield
    finally:
        delete_topics(admin, Topics(s.topic_prefix).all())


def _settings(s: Settings) -> Settings:
    return s.model_copy(update={"drift_window_seconds": WINDOW, "drift_ks_sample_rate": 0.2})


def _produce(s: Settings, n: int, drift_at: int | None = None, seed: int = 4, rate: float = 0) -> None:
    tally = produce_generated(
        s, n, rate, seed=seed, entities=600, schedule=DriftSchedule(covariate_at=drift_at),
        label_delay=10, start_ts=START, console=Console(quiet=True),
    )  # fmt: skip
    assert tally.failed == 0 and tally.delivered == tally.sent


def _closed_windows(s: Settings, version: int = 1) -> dict[float, dict[str, dict[bytes, bytes]]]:
    """Every closed merged window: per feature, its bin counts as stored in Redis."""
    r = redis_client(s)
    prefix = f"{{{s.topic_prefix}:drift:fraud:{version}}}"
    starts = sorted(float(k.rsplit(b":", 1)[1]) for k in r.scan_iter(f"{prefix}:~closed:*"))
    features = ["amount", next(iter(DRIFTED_FEATURES)), "merchant_category", "__score__"]
    return {
        ws: {f: r.hgetall(f"{prefix}:{f}:{int(ws)}") for f in features}  # type: ignore[misc]
        for ws in starts
    }


def _psi(s: Settings, feature: str, counts: dict[bytes, bytes]) -> float:
    from driftline.wiring import model_registry

    meta = model_registry(s).get("fraud", 1)
    ref = meta.score_reference if feature == "__score__" else meta.reference[feature]
    assert ref is not None
    window = PSIWindow(to_reference(ref), feature)
    c = np.zeros(window.binning.n_bins, dtype=np.int64)
    for b, v in counts.items():
        c[int(b)] = int(v)
    return psi_from_counts(c, window.reference_props, window.eps)


def _run_workers(s: Settings, workers: int) -> None:
    running = [start_worker(s, worker_id=f"w{i}", exit_when_idle=6.0) for i in range(workers)]
    drain(s, *running)


def _drift_state(s: Settings, version: int = 1) -> dict[str, Any]:
    """Every drift key of a version but the bookkeeping (claims, owners, outbox), by name."""
    r = redis_client(s)
    prefix = f"{{{s.topic_prefix}:drift:fraud:{version}}}:"
    out: dict[str, Any] = {}
    for key in r.scan_iter(f"{prefix}*"):
        name = key.decode()[len(prefix) :]
        if name.startswith("~adwin:"):  # a partition's ADWIN and CUSUM detectors, and its offset
            out[name] = json.loads(r.get(key) or b"{}")
        elif name == "~history":  # every closed window's statistic, per detector and feature
            rows = [json.loads(x) for x in r.lrange(key, 0, -1)]
            out[name] = sorted(rows, key=lambda x: [str(x[k]) for k in sorted(x) if k != "statistic"])
        elif not name.startswith("~"):  # a merged window of one feature: <feature>:<window start>
            out[name] = r.hgetall(key) if r.type(key) == b"hash" else r.dump(key)
    return out


def _leaf_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ; floats up to rounding (a CUSUM's running sums depend
    on how a partition's events were split into batches in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in a.keys() | b.keys() for d in _leaf_diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _leaf_diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def test_one_or_three_workers_give_identical_windows(
    own_settings: Settings, stack_settings: Settings
) -> None:
    one = _settings(own_settings)
    three = _settings(stack_settings.model_copy(update={"topic_prefix": f"{own_settings.topic_prefix}-3w"}))
    with topics_of(three):
        for s in (one, three):
            register(s)
            _produce(s, 14_000, drift_at=8_000)  # same seed: the same events, keyed to the same partitions
        _run_workers(one, 1)
        _run_workers(three, 3)
        a = _closed_windows(one)
        state_one, state_three = _drift_state(one), _drift_state(three)
        alerts = consume_all(three, Topics(three.topic_prefix).signals, 1, 10)
        incidents = [
            IncidentEvent.model_validate_json(x.value)
            for x in consume_all(three, Topics(three.topic_prefix).alerts, 1, 10)
        ]
    assert len(a) >= 5, f"only {len(a)} windows closed"
    # Every feature's merged windows, every windowed statistic (PSI, KS, missing rate of every
    # feature and the score) and every partition's ADWIN and CUSUM state: the same.
    assert state_one.keys() == state_three.keys()
    for name in state_one:
        differences = _leaf_diff(state_one[name], state_three[name])
        assert not differences, f"{name} differs between 1 and 3 workers: {differences[:5]}"
    stats = state_one["~history"]
    features = {x["feature"] for x in stats}
    assert len(features) >= 15, features  # 14 features and the score
    assert {x["detector"] for x in stats} >= set(WINDOWED_DETECTORS), {x["detector"] for x in stats}
    detectors = [v for k, v in state_one.items() if k.startswith("~adwin:")]
    assert len(detectors) == 6 and all(d["cusum"] for d in detectors), "one per partition, CUSUMs too"
    total = sum(int(v) for v in a[min(a)]["amount"].values())
    assert 1_800 < total < 2_200  # the window's full count: every event of its 1000 s
    # The drifted feature's PSI jumps in the windows after the drift (event 8,000, ~4,000 s in).
    drifted = next(iter(DRIFTED_FEATURES))
    psi = {ws: _psi(one, drifted, a[ws][drifted]) for ws in a}
    assert all(v < 0.1 for ws, v in psi.items() if ws + WINDOW <= START + 3_900), psi
    assert all(v > 0.2 for ws, v in psi.items() if ws >= START + 4_100), psi
    alerted = [DriftAlert.model_validate_json(x.value).feature for x in alerts]
    assert drifted in alerted and len(alerted) == len(set(alerted)), "3 workers, still one alert per feature"
    # ... and one incident, whichever worker raised which signal, holding the drifted feature.
    assert [e.kind for e in incidents if e.kind == "opened"] == ["opened"], [e.summary for e in incidents]
    assert len({e.incident_id for e in incidents}) == 1
    latest = DriftIncident.model_validate_json(
        redis_client(three).hget(
            incidents_key(three.topic_prefix, incidents[0].model, incidents[0].version),
            incidents[0].incident_id,
        )
        or b"{}"
    )  # its evidence as of now, attached since its last event too
    assert latest.feature(drifted) is not None, latest.summary


def _closed_starts(r: redis.Redis, s: Settings) -> list[float]:
    return sorted(
        float(k.rsplit(b":", 1)[1]) for k in r.scan_iter(f"{{{s.topic_prefix}:drift:fraud:1}}:~closed:*")
    )


def _window_count(r: RedisClient, s: Settings, feature: str, ws: float) -> int:
    raw = r.hgetall(f"{{{s.topic_prefix}:drift:fraud:1}}:{feature}:{int(ws)}")
    return sum(int(v) for v in raw.values())


def _group_stable(s: Settings, group: str) -> bool:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(s.kafka_client_config())  # kept alive until its future resolves
    described = admin.describe_consumer_groups([group])[group].result(10)
    return bool(described.state == ConsumerGroupState.STABLE and described.members)


def test_sigkill_mid_window_closes_it_once_with_the_full_count(own_settings: Settings) -> None:
    s = _settings(own_settings)
    register(s)
    r = redis_client(s)
    topics = Topics(s.topic_prefix)
    # Windows close as event time passes; drift -> alerts. Sent while the worker runs (~6 s), so
    # that the kill lands mid-stream, not after the worker caught up.
    producer = threading.Thread(target=_produce, args=(s, 9_000, 3_000), kwargs={"rate": 1000})
    first = _spawn_worker(s, "--batch-size", "200")
    wait_until(lambda: _group_stable(s, f"{s.topic_prefix}-worker"), 60, 0.5)  # it owns the partitions
    producer.start()
    # Kill it once a third of the stream is committed, while events are still coming and windows
    # are open. (Waiting for two closed windows instead let the worker finish first: 9,000 of
    # 9,000 committed at the kill.)
    wait_until(lambda: committed_total(s, f"{s.topic_prefix}-worker", topics.events) >= 3_000, 120)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    committed = committed_total(s, f"{s.topic_prefix}-worker", topics.events)
    assert 0 < committed < 9_000, f"the kill should land mid-stream ({committed} of 9,000 committed)"
    before = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.signals, 0, 5)]
    second = _spawn_worker(s, "--batch-size", "200", "--exit-when-idle", "5")
    producer.join(120)
    try:
        assert second.wait(180) == 0, second.stderr.read() if second.stderr else ""
    finally:
        if second.poll() is None:
            second.kill()
    closed = sorted(
        float(k.rsplit(b":", 1)[1]) for k in r.scan_iter(f"{{{s.topic_prefix}:drift:fraud:1}}:~closed:*")
    )
    assert len(closed) >= 3
    # Every closed window holds each of its events exactly once: the counts of all its partitions
    # add up to the events generated in its 1000 s, whatever the kill interrupted.
    expected = _events_per_window(9_000, drift_at=3_000)
    for ws in closed:
        assert _window_count(r, s, "amount", ws) == expected[ws], ws
    after = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.signals, len(before), 10)]
    ids = [a.id for a in after]
    assert len(ids) == len(set(ids)), "an alert was repeated after the restart"
    keys = [(a.feature, a.detector, a.window_end_ts) for a in after]
    assert len(keys) == len(set(keys))
    assert next(iter(DRIFTED_FEATURES)) in {a.feature for a in after}
    assert {a.id for a in before} <= set(ids)  # what went out before the kill is still there (once)
    _one_incident_opened_once(s)


def _one_incident_opened_once(s: Settings) -> None:
    """The incident events on the alerts topic: one drift, one incident, opened once, ids unique."""
    events = [
        IncidentEvent.model_validate_json(x.value)
        for x in consume_all(s, Topics(s.topic_prefix).alerts, 1, 10)
    ]
    opened = [e.incident_id for e in events if e.kind == "opened"]
    assert len(opened) == 1, [(e.kind, e.summary) for e in events]
    assert len({e.id for e in events}) == len(events), "an incident event was published twice"
    assert {e.incident_id for e in events} == set(opened)


def _events_per_window(n: int, drift_at: int | None, seed: int = 4) -> dict[float, int]:
    from stream.synthetic import FraudGenerator

    gen = FraudGenerator(
        seed=seed, entities=600, schedule=DriftSchedule(covariate_at=drift_at), start_ts=START
    )
    ts = np.concatenate([b.ts for b in gen.batches(n)])
    starts, counts = np.unique(np.floor(ts / WINDOW) * WINDOW, return_counts=True)
    return {float(a): int(c) for a, c in zip(starts, counts, strict=True)}


@pytest.mark.parametrize(
    ("point", "same_id"),
    [("window-claimed", True), ("window-decided", False)],
    ids=["claimed-restart-same-id", "decided-other-worker-after-timeout"],
)
def test_sigkill_between_claiming_a_window_and_producing_its_alerts_loses_none(
    own_settings: Settings, point: str, same_id: bool
) -> None:
    """The worker kills itself right after claiming a drifted window (or after deciding its alerts),
    before producing them; the next worker publishes them, each alert once, with the full count."""
    s = _settings(own_settings)
    register(s)
    r = redis_client(s)
    topics = Topics(s.topic_prefix)
    prefix = f"{{{s.topic_prefix}:drift:fraud:1}}"
    _produce(s, 9_000, drift_at=3_000)
    env = {"DRIFTLINE_DRIFT_CLOSE_TIMEOUT_SECONDS": "5"}
    first = _spawn_worker(s, "--batch-size", "200", "--worker-id", "w-1", env={**env, FAULT_ENV: point})
    try:
        assert first.wait(180) == -signal.SIGKILL, "the fault point was never reached"
    finally:
        if first.poll() is None:
            first.kill()
    killed: dict[float, dict[str, Any]] = {}
    members: list[bytes] = r.zrange(f"{prefix}:~pending", 0, -1)  # type: ignore[assignment]
    for member in members:
        ws = member.decode()
        killed[float(ws)] = json.loads(r.get(f"{prefix}:~closed:{ws}") or b"{}")
    assert killed, "no window was left pending by the kill"
    states = {m["state"] for m in killed.values()}
    if point == "window-claimed":
        assert states == {"pending"}
    else:
        assert "decided" in states
    before = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.signals, 0, 5)]
    assert not [a for a in before if a.window_start_ts in killed], "produced before the kill"
    second = _spawn_worker(
        s, "--batch-size", "200", "--worker-id", "w-1" if same_id else "w-2", "--exit-when-idle", "8", env=env
    )
    try:
        assert second.wait(240) == 0, second.stderr.read() if second.stderr else ""
    finally:
        if second.poll() is None:
            second.kill()
    alerts = [
        DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.signals, len(before) + 1, 10)
    ]
    ids = [a.id for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was published twice"
    recovered = [a for a in alerts if a.window_start_ts in killed and a.detector in WINDOWED_DETECTORS]
    assert recovered, "the killed window's alerts were lost"
    decided = {a["id"] for m in killed.values() for a in m.get("alerts", [])}
    assert decided <= {a.id for a in recovered}  # the alerts decided before the kill, as decided
    expected = _events_per_window(9_000, drift_at=3_000)
    for a in recovered:
        start = a.window_start_ts
        assert set(a.window_offsets) == set(range(6))
        # every event of the window, each once: its offsets per partition are contiguous
        assert sum(last - first + 1 for first, last in a.window_offsets.values()) == expected[start]
        if a.detector in ("psi", "missing_rate"):
            assert a.n_window == expected[start]
        assert _window_count(r, s, "amount", start) == expected[start]
    assert r.zcard(f"{prefix}:~pending") == 0 and r.hlen(f"{prefix}:~outbox") == 0
    assert {json.loads(r.get(f"{prefix}:~closed:{int(ws)}") or b"{}")["state"] for ws in killed} == {
        "published"
    }
    # every alert the shared policy decided (ADWIN's too) is on the topic, once
    history: list[bytes] = r.lrange(f"{{{s.topic_prefix}:drift:fraud:1}}:~alerts", 0, -1)  # type: ignore[assignment]
    assert sorted(json.loads(x)["id"] for x in history) == sorted(ids)
    _one_incident_opened_once(s)
