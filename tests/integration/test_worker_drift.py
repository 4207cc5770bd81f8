"""Drift windows through real workers: merged across workers, and surviving a SIGKILL."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException
from rich.console import Console

from detectors.alerts import DriftAlert
from detectors.psi import PSIWindow, psi_from_counts
from detectors.window_store import FAULT_ENV, WINDOWED_DETECTORS
from driftline.produce import produce_generated
from driftline.settings import Settings
from driftline.wiring import redis_client
from stream.drift import to_reference
from stream.synthetic import DRIFTED_FEATURES, DriftSchedule
from stream.topics import Topics, create_topics, delete_topics
from tests.helpers import consume_all
from tests.integration.test_worker import _spawn_worker
from tests.integration.worker_support import register, start_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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


def _produce(s: Settings, n: int, drift_at: int | None = None, seed: int = 4) -> None:
    tally = produce_generated(
        s, n, 0, seed=seed, entities=600, schedule=DriftSchedule(covariate_at=drift_at),
        label_delay=10, start_ts=START, console=Console(quiet=True),
    )  # fmt: skip
    assert tally.failed == 0 and tally.delivered == tally.sent


def _closed_windows(s: Settings, version: int = 1) -> dict[float, dict[str, dict[bytes, bytes]]]:
    """Every closed merged window: per feature, its bin counts as stored in Redis."""
    r = redis_client(s)
    prefix = f"{s.topic_prefix}:drift:fraud:{version}"
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
    for w in running:
        w.thread.join(240)
    for w in running:
        w.stop()


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
        a, b = _closed_windows(one), _closed_windows(three)
        alerts = consume_all(three, Topics(three.topic_prefix).alerts, 1, 10)
    assert len(a) >= 5, f"only {len(a)} windows closed"
    assert a.keys() == b.keys()
    for ws in a:
        for f in a[ws]:
            assert a[ws][f] == b[ws][f], f"window {ws} of {f}: counts differ"
            assert _psi(one, f, a[ws][f]) == _psi(three, f, b[ws][f])
    total = sum(int(v) for v in a[min(a)]["amount"].values())
    assert 1_800 < total < 2_200  # the window's full count: every event of its 1000 s
    # The drifted feature's PSI jumps in the windows after the drift (event 8,000, ~4,000 s in).
    drifted = next(iter(DRIFTED_FEATURES))
    psi = {ws: _psi(one, drifted, a[ws][drifted]) for ws in a}
    assert all(v < 0.1 for ws, v in psi.items() if ws + WINDOW <= START + 3_900), psi
    assert all(v > 0.2 for ws, v in psi.items() if ws >= START + 4_100), psi
    features = [DriftAlert.model_validate_json(x.value).feature for x in alerts]
    assert drifted in features and len(features) == len(set(features)), (
        "3 workers, still one alert per feature"
    )


def _closed_starts(r: redis.Redis, s: Settings) -> list[float]:
    return sorted(
        float(k.rsplit(b":", 1)[1]) for k in r.scan_iter(f"{s.topic_prefix}:drift:fraud:1:~closed:*")
    )


def _window_count(r: redis.Redis, s: Settings, feature: str, ws: float) -> int:
    raw = r.hgetall(f"{s.topic_prefix}:drift:fraud:1:{feature}:{int(ws)}")
    return sum(int(v) for v in raw.values())


def test_sigkill_mid_window_closes_it_once_with_the_full_count(own_settings: Settings) -> None:
    s = _settings(own_settings)
    register(s)
    r = redis_client(s)
    topics = Topics(s.topic_prefix)
    _produce(s, 9_000, drift_at=3_000)  # windows close as event time passes; drift -> alerts
    first = _spawn_worker(s, "--batch-size", "200")
    # Kill it once some windows closed and alerts went out, while later windows are open.
    wait_until(lambda: len(_closed_starts(r, s)) >= 2, 120)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    before = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.alerts, 0, 5)]
    second = _spawn_worker(s, "--batch-size", "200", "--exit-when-idle", "5")
    try:
        assert second.wait(180) == 0, second.stderr.read() if second.stderr else ""
    finally:
        if second.poll() is None:
            second.kill()
    closed = sorted(
        float(k.rsplit(b":", 1)[1]) for k in r.scan_iter(f"{s.topic_prefix}:drift:fraud:1:~closed:*")
    )
    assert len(closed) >= 3
    # Every closed window holds each of its events exactly once: the counts of all its partitions
    # add up to the events generated in its 1000 s, whatever the kill interrupted.
    expected = _events_per_window(9_000, drift_at=3_000)
    for ws in closed:
        assert _window_count(r, s, "amount", ws) == expected[ws], ws
    after = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.alerts, len(before), 10)]
    ids = [a.id for a in after]
    assert len(ids) == len(set(ids)), "an alert was repeated after the restart"
    keys = [(a.feature, a.detector, a.window_end_ts) for a in after]
    assert len(keys) == len(set(keys))
    assert next(iter(DRIFTED_FEATURES)) in {a.feature for a in after}
    assert {a.id for a in before} <= set(ids)  # what went out before the kill is still there (once)


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
    prefix = f"{s.topic_prefix}:drift:fraud:1"
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
    before = [DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.alerts, 0, 5)]
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
        DriftAlert.model_validate_json(x.value) for x in consume_all(s, topics.alerts, len(before) + 1, 10)
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
    history: list[bytes] = r.lrange(f"{s.topic_prefix}:alerts", 0, -1)  # type: ignore[assignment]
    assert sorted(json.loads(x)["id"] for x in history) == sorted(ids)


class _Msg:
    """Just what the worker reads of a consumed message."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class _FakeKafka:
    """Producer and consumer in one: produce, flush (the first one with a window's alert fails), commit."""

    def __init__(self, alerts_topic: str) -> None:
        self.alerts_topic = alerts_topic
        self.queued: list[tuple[str, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes]] = []
        self.failed: list[tuple[str, bytes]] = []
        self.commits = 0
        self.seeks = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self.queued.append((topic, value, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        fail = not self.failed and any(
            topic == self.alerts_topic
            and DriftAlert.model_validate_json(value).detector in WINDOWED_DETECTORS
            for topic, value, _ in self.queued
        )
        for topic, value, on_delivery in self.queued:
            (self.failed if fail else self.delivered).append((topic, value))
            if fail and on_delivery is not None:
                on_delivery(KafkaError(KafkaError._TRANSPORT, "broker unavailable (fake)"), None)
        self.queued = []
        return 0

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        self.commits += 1

    def seek(self, _tp: Any) -> None:
        self.seeks += 1


def _fake_worker(s: Settings, fake: _FakeKafka) -> Any:
    """A real worker (scoring, feature store, drift stage on the real Redis) on a fake Kafka."""
    from driftline.wiring import build_worker
    from stream.scoring import wait_for_scorer
    from stream.worker import WorkerConfig

    register(s)
    worker = build_worker(
        s, WorkerConfig(model="fraud", group_id=f"{s.topic_prefix}-fake", worker_id="w-fake")
    )
    worker.consumer.close()
    worker.producer = fake  # type: ignore[assignment]
    worker.consumer = fake  # type: ignore[assignment]
    worker.scorer = wait_for_scorer(worker.follower, lambda: False)
    assert worker.drift is not None
    worker.drift.set_partitions([0])
    return worker


def _fake_messages(s: Settings, n: int = 9_000) -> list[_Msg]:
    from stream.synthetic import FraudGenerator

    topics = Topics(s.topic_prefix)
    gen = FraudGenerator(seed=4, entities=600, schedule=DriftSchedule(covariate_at=3_000), start_ts=START)
    events = [e for b in gen.batches(n) for e in b.event_dicts()]
    return [_Msg(topics.events, i, e["entity_id"].encode(), orjson.dumps(e)) for i, e in enumerate(events)]


class _RebalancedKafka(_FakeKafka):
    """The first commit fails as when the group rebalanced during the batch."""

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        super().commit(offsets, asynchronous)
        if self.commits == 1:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION))


def test_a_commit_refused_by_a_rebalance_does_not_stop_the_worker(own_settings: Settings) -> None:
    s = _settings(own_settings)
    fake = _RebalancedKafka(Topics(s.topic_prefix).alerts)
    worker = _fake_worker(s, fake)
    msgs = _fake_messages(s, 2_000)
    worker.process(msgs[:1000])
    worker.process(msgs[1000:])
    assert fake.commits == 2 and worker.metrics.retries._value.get() == 0
    assert len([v for t, v in fake.delivered if t == Topics(s.topic_prefix).predictions]) == 2_000


def test_a_batch_whose_alerts_failed_is_redone_with_the_same_alerts(own_settings: Settings) -> None:
    """The worker's own retry (an output failed): the redo produces the window's alerts as decided."""
    s = _settings(own_settings)
    r = redis_client(s)
    topics = Topics(s.topic_prefix)
    fake = _FakeKafka(topics.alerts)
    worker = _fake_worker(s, fake)
    for lo in range(0, 9_000, 500):
        worker.process(_fake_messages(s)[lo : lo + 500])
    failed = [DriftAlert.model_validate_json(v) for t, v in fake.failed if t == topics.alerts]
    sent = [DriftAlert.model_validate_json(v) for t, v in fake.delivered if t == topics.alerts]
    assert failed and worker.metrics.retries._value.get() == 1
    assert [a.id for a in sent] == list(dict.fromkeys(a.id for a in sent)), "an alert was sent twice"
    assert all(a in sent for a in failed)  # the very alerts decided (ADWIN's too), once each
    windowed = [a for a in failed if a.detector in WINDOWED_DETECTORS]
    assert windowed
    prefix = f"{s.topic_prefix}:drift:fraud:1"
    assert r.zcard(f"{prefix}:~pending") == 0
    for a in windowed:
        raw = r.get(f"{prefix}:~closed:{int(a.window_start_ts)}")
        assert json.loads(raw or b"{}")["state"] == "published"
