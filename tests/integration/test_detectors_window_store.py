"""WindowStore against the real Redis: merged event-time windows, exactly-once closing, idempotent adds."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import redis

from detectors.alerts import DriftAlert
from detectors.incidents import split_outputs
from detectors.monitor import MonitorConfig
from detectors.policy_store import SharedAlertPolicy
from detectors.psi import PSIWindow
from detectors.reference import Reference
from detectors.signals import DriftSignal, WindowStat
from detectors.window_store import WindowStore
from detectors.windowing import ClosedWindow

pytestmark = pytest.mark.integration

T0 = 1_764_000_000.0
WINDOW = 30.0
PARTITIONS = list(range(6))
N = 36_000  # 100 events/s over 6 minutes: 12 windows of 30 s


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    url = os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the window store tests need Redis at {url} (`driftline stack up`): {exc}")
    yield r
    r.close()


@pytest.fixture
def namespace(new_prefix: Callable[[str], str]) -> str:
    return new_prefix("detectors")  # its keys are deleted after the test


@dataclass
class Stream:
    ts: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    columns: dict[str, np.ndarray]
    scores: np.ndarray

    def take(
        self, idx: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            {k: v[idx] for k, v in self.columns.items()},
            self.ts[idx],
            self.partition[idx],
            self.offset[idx],
            self.scores[idx],
        )


def _columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    amount = rng.lognormal(3.0, 1.0, n)
    amount[rng.random(n) < 0.02] = np.nan
    return {
        "amount": amount,
        "risk": rng.normal(0.0, 1.0, n),
        "country": rng.choice(["DE", "FR", "US"], size=n, p=[0.5, 0.3, 0.2]).astype(object),
    }


def _references() -> tuple[dict[str, Reference], Reference]:
    rng = np.random.default_rng(100)
    cols = _columns(rng, 10_000)
    return {k: Reference.from_values(v) for k, v in cols.items()}, Reference.from_values(rng.random(10_000))


def _stream() -> Stream:
    rng = np.random.default_rng(7)
    cols = _columns(rng, N)
    ts = T0 + np.arange(N) / 100.0
    cols["risk"][ts >= T0 + 180] += 0.8  # drift half way
    flood = (ts >= T0 + 240) & (rng.random(N) < 0.3)
    cols["country"][flood] = "XX"  # an unseen category
    part = rng.integers(0, len(PARTITIONS), N)
    offset = np.zeros(N, dtype=np.int64)
    for p in PARTITIONS:
        m = part == p
        offset[m] = 1000 + np.arange(m.sum())  # per-partition offsets, in event-time order
    return Stream(ts, part, offset, cols, rng.random(N))


def _store(client: redis.Redis, ns: str, worker: str) -> WindowStore:
    refs, score_ref = _references()
    return WindowStore(
        client,
        ns,
        "fraud",
        3,
        refs,
        score_reference=score_ref,
        window_seconds=WINDOW,
        allowed_lateness=2.0,
        partitions=PARTITIONS,
        ks_sample_size=500,
        ks_sample_rate=0.5,
        config=MonitorConfig(min_count=50),
        worker_id=worker,
    )


def _batches(events: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """A consumer's polls: consecutive slices of its events, of random sizes."""
    out, i = [], 0
    while i < events.size:
        size = int(rng.integers(100, 900))
        out.append(events[i : i + size])
        i += size
    return out


@dataclass
class Outcome:
    stats: list[WindowStat]
    signals: list[DriftSignal]

    def by_window(self) -> dict[tuple[str, str, float], tuple[float, int]]:
        return {(s.feature, s.detector, s.window_end_ts): (s.statistic, s.n_window) for s in self.stats}


def _run(
    client: redis.Redis,
    ns: str,
    stream: Stream,
    assignment: list[list[int]],
    seed: int,
    replay_probability: float = 0.0,
) -> Outcome:
    """Workers consume their partitions in polls; polls of different workers interleave at random."""
    rng = np.random.default_rng(seed)
    stores = [_store(client, ns, f"w{i}") for i in range(len(assignment))]
    queues = [_batches(np.flatnonzero(np.isin(stream.partition, parts)), rng) for parts in assignment]
    done = [0] * len(stores)
    out = Outcome([], [])
    while any(d < len(q) for d, q in zip(done, queues, strict=True)):
        w = int(rng.choice([i for i, q in enumerate(queues) if done[i] < len(q)]))
        idx = queues[w][done[w]]
        cols, ts, part, off, scores = stream.take(idx)
        result = stores[w].add(cols, ts, part, off, scores=scores)
        assert result.added == idx.size and result.late == 0
        if done[w] and rng.random() < replay_probability:  # a crash before commit: the poll again
            again = stream.take(queues[w][done[w] - 1])
            replay = stores[w].add(again[0], again[1], again[2], again[3], scores=again[4])
            assert (replay.added, replay.replayed) == (0, again[1].size)
        out.signals += stores[w].close_ready()
        out.stats += stores[w].windows
        done[w] += 1
    for store in stores:
        out.signals += store.close_ready()
        out.stats += store.windows
    return out


def _truth(stream: Stream, feature: str, window_start: float) -> float:
    """PSI of one window computed locally from all its events."""
    refs, _ = _references()
    psi = PSIWindow(refs[feature], feature, window_seconds=WINDOW, min_count=1)
    inside = (stream.ts >= window_start) & (stream.ts < window_start + WINDOW)
    counts = psi.bin_counts(stream.columns[feature][inside])
    window = ClosedWindow((), window_start, window_start + WINDOW, 0, 1, int(inside.sum()))
    ev = psi.evaluate_counts(counts, window)
    assert ev is not None
    return ev.statistic


def test_one_or_three_workers_give_identical_windows(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    one = _run(client, f"{namespace}:one", stream, [PARTITIONS], seed=1)
    three = _run(
        client, f"{namespace}:three", stream, [[0, 3], [1, 4], [2, 5]], seed=2, replay_probability=0.15
    )

    assert one.by_window() == three.by_window()
    windows = sorted({end for _, _, end in one.by_window()})
    assert windows == [T0 + WINDOW * k for k in range(1, 12)]  # the last window is still open
    # each window closed exactly once: one evaluation per feature, detector and window
    counts = Counter((s.feature, s.detector, s.window_end_ts) for s in three.stats)
    assert set(counts.values()) == {1}
    detectors = Counter((f, d) for f, d, _ in counts)
    assert (
        detectors[("amount", "psi")]
        == detectors[("risk", "ks")]
        == detectors[("country", "missing_rate")]
        == 11
    )
    # merged counts are exact: PSI equals a local computation over all the window's events
    for feature in ("amount", "risk", "country"):
        for end in windows:
            stat, n = three.by_window()[(feature, "psi", end)]
            assert stat == pytest.approx(_truth(stream, feature, end - WINDOW), abs=1e-12)
            assert n == 3000
    # KS saw a bounded, identical sample
    ks_sizes = {n for (f, d, _), (_, n) in three.by_window().items() if d == "ks"}
    assert max(ks_sizes) <= 500
    # and the drifts were found
    found = {(s.feature, s.detector, s.severity) for s in three.signals}
    assert ("risk", "psi", "critical") in found and ("risk", "ks", "critical") in found
    assert ("country", "psi", "critical") in found
    assert {s.feature for s in three.signals} == {"risk", "country"}
    assert [s.model_dump() for s in one.signals] == [s.model_dump() for s in three.signals]


def test_replayed_and_overlapping_batches_do_not_double_count(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    a, b = _store(client, namespace, "a"), _store(client, namespace, "b")
    p0 = np.flatnonzero(stream.partition == 0)[:300]
    first, second, third = p0[:50], p0[:100], p0[50:150]
    r1 = b.add(*stream.take(first)[:4])
    assert (r1.added, r1.replayed, r1.attempts) == (50, 0, 1)
    r2 = a.add(*stream.take(second)[:4])  # a new owner re-reads from an older commit
    assert (r2.added, r2.replayed) == (50, 50)
    r3 = b.add(*stream.take(third)[:4])  # b's view of the offset is stale: compare-and-set, retry
    assert (r3.added, r3.replayed, r3.attempts) == (50, 50, 2)
    r4 = a.add(*stream.take(second)[:4])
    assert (r4.added, r4.replayed) == (0, 100)
    window = a.window_start(float(stream.ts[p0[0]]))
    assert int(a.merged_counts("risk", window).sum()) == 150
    assert int(client.hget(a.partitions_key, "o:0") or 0) == int(stream.offset[p0[149]])


def test_restart_mid_window_closes_once_with_the_full_count(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    first_minute = np.flatnonzero(stream.ts < T0 + 75)
    batches = _batches(first_minute, np.random.default_rng(3))
    store = _store(client, namespace, "before")
    stats: list[WindowStat] = []
    for idx in batches[:-3]:
        store.add(*stream.take(idx)[:4])
        store.close_ready()
        stats += store.windows
    # the worker dies; its last three polls were not committed, so they come again to a new one
    store = _store(client, namespace, "after")
    for idx in batches[-3:] + _batches(np.flatnonzero(stream.ts >= T0 + 75), np.random.default_rng(4)):
        store.add(*stream.take(idx)[:4])
        store.close_ready()
        stats += store.windows
    psi = [s for s in stats if s.detector == "psi" and s.feature == "amount"]
    ends = [s.window_end_ts for s in psi]
    assert ends == sorted(set(ends)) and T0 + 60 in ends and T0 + 90 in ends
    assert {s.n_window for s in psi} == {3000}
    # the window cut by the restart ([60 s, 90 s)) is exact too
    restart_window = next(s for s in psi if s.window_end_ts == T0 + 90)
    assert restart_window.statistic == pytest.approx(_truth(stream, "amount", T0 + 60), abs=1e-12)


def test_late_events_are_dropped_and_counted(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    store = _store(client, namespace, "w")
    head = np.flatnonzero(stream.ts < T0 + 70)
    store.add(*stream.take(head)[:4])
    signals = store.close_ready()
    assert {s.window_end_ts for s in store.windows} == {T0 + 30, T0 + 60}
    assert [s for s in signals if s.feature == "amount"] == []
    before = store.merged_counts("amount", T0)
    cols, ts, _, _, _ = stream.take(head[:10])
    late = store.add(cols, ts, np.zeros(10, dtype=np.int64), np.arange(10**6, 10**6 + 10))
    assert (late.added, late.late) == (0, 10)
    assert np.array_equal(store.merged_counts("amount", T0), before)
    assert store.close_ready() == []  # closed once, never again


def test_windows_wait_for_every_partition_unless_idle(client: redis.Redis, namespace: str) -> None:
    refs, score_ref = _references()
    rng = np.random.default_rng(5)
    store = WindowStore(
        client, namespace, "m", 1, refs, window_seconds=10.0, allowed_lateness=0.0, partitions=[0, 1, 2]
    )
    cols = _columns(rng, 2000)
    ts = T0 + np.arange(2000) / 50.0  # 40 s
    part = np.where(np.arange(2000) % 2 == 0, 0, 1)  # partition 2 never sends
    store.add(cols, ts, part, np.arange(2000), now=1000.0)
    assert store.watermark(now=1000.0) == -np.inf
    assert store.close_ready(now=1000.0) == [] and store.windows == []
    idle = WindowStore(
        client,
        namespace,
        "m",
        1,
        refs,
        window_seconds=10.0,
        allowed_lateness=0.0,
        partitions=[0, 1, 2],
        idle_timeout_seconds=30.0,
    )
    # Partition 2 was never seen: it holds windows open until the first batch is 30 s old.
    assert idle.watermark(now=1010.0) == -np.inf
    more_ts = T0 + 40 + np.arange(20) / 20.0
    idle.add(_columns(rng, 20), more_ts, np.arange(20) % 2, 2000 + np.arange(20), now=1025.0)
    assert idle.watermark(now=1031.0) == pytest.approx(T0 + 40.95)
    idle.close_ready(now=1031.0)
    assert sorted({s.window_end_ts for s in idle.windows}) == [T0 + 10, T0 + 20, T0 + 30, T0 + 40]
    assert score_ref.kind == "numeric"


def _offset_ranges(stream: Stream, window_start: float) -> dict[int, tuple[int, int]]:
    inside = (stream.ts >= window_start) & (stream.ts < window_start + WINDOW)
    return {
        p: (
            int(stream.offset[inside & (stream.partition == p)].min()),
            int(stream.offset[inside & (stream.partition == p)].max()),
        )
        for p in PARTITIONS
    }


def test_signals_carry_each_partitions_offset_range(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    out = _run(client, namespace, stream, [[0, 3], [1, 4], [2, 5]], seed=3, replay_probability=0.2)
    assert out.signals
    for s in out.signals:
        assert s.partition is None
        assert s.window_offsets == _offset_ranges(stream, s.window_start_ts), (s.feature, s.window_start_ts)
    raw = client.hgetall(_store(client, namespace, "x").offsets_key(T0))
    # a first and a last offset per partition and the window's event count: 13 fields, not per event
    assert len(raw) == 2 * len(PARTITIONS) + 1 and int(raw[b"n"]) == 3000


# -- closing: at least once for the outputs, exactly once for the decision -------------------------


def _closing_store(client: redis.Redis, ns: str, worker: str) -> WindowStore:
    store = _store(client, ns, worker)
    store.close_timeout_seconds = 30.0
    return store


def _fill(store: WindowStore, stream: Stream, until: float) -> None:
    store.add(*stream.take(np.flatnonzero(stream.ts < until))[:4])


def _policy(client: redis.Redis, ns: str) -> SharedAlertPolicy:
    return SharedAlertPolicy(
        client, f"{{{ns}:drift:fraud:3}}:~policy", history_key=f"{{{ns}:drift:fraud:3}}:~alerts"
    )


def test_a_close_whose_owner_died_before_deciding_is_taken_over_once(
    client: redis.Redis, namespace: str
) -> None:
    stream = _stream()
    dead = _closing_store(client, namespace, "dead")
    _fill(dead, stream, T0 + 300)
    signals = dead.close_ready(now=1000.0)  # claimed and evaluated; then SIGKILL: nothing decided
    assert signals and sorted(dead.inflight) == [T0 + WINDOW * k for k in range(9)]
    ws = signals[0].window_start_ts
    assert dead.marker(ws) == {"owner": dead.owner, "state": "pending", "at": 1000.0}
    other = _closing_store(client, namespace, "other")
    assert other.close_ready(now=1010.0) == [] and other.inflight == {}  # in flight elsewhere: left alone
    again = other.close_ready(now=1031.0)  # 31 s > the 30 s timeout: taken over, evaluated again
    assert [s.model_dump() for s in again] == [s.model_dump() for s in signals]
    assert (other.marker(ws) or {})["owner"] == other.owner
    third = _closing_store(client, namespace, "third")
    assert third.close_ready(now=1032.0) == []  # taken over once: the takeover is in flight now
    other.mark_published()
    assert (other.marker(ws) or {})["state"] == "published"
    assert client.zcard(other.pending_key) == 0
    assert third.close_ready(now=5000.0) == [] and third.recovered == []  # published: never again


def test_a_restarted_worker_takes_its_own_pending_closes_over_at_once(
    client: redis.Redis, namespace: str
) -> None:
    stream = _stream()
    before = _closing_store(client, namespace, "w-1")
    _fill(before, stream, T0 + 300)
    signals = before.close_ready(now=1000.0)
    after = _closing_store(client, namespace, "w-1")  # same worker id, a new process
    assert after.owner != before.owner
    again = after.close_ready(now=1001.0)
    assert [s.model_dump() for s in again] == [s.model_dump() for s in signals]


def test_decided_alerts_are_published_again_as_decided_never_re_decided(
    client: redis.Redis, namespace: str
) -> None:
    stream = _stream()
    policy = _policy(client, namespace)
    dead = _closing_store(client, namespace, "dead")
    _fill(dead, stream, T0 + 300)
    signals = dead.close_ready(now=1000.0)
    alerts, _ = split_outputs(
        policy.decide(signals, model="fraud", version=3, windows=dead.windows, record=dead.record_decision)
    )  # decided and recorded; then SIGKILL before the alerts were produced
    assert alerts and all(a.window_offsets for a in alerts)
    state = client.get(policy.key)
    decided = {a.window_start_ts for a in alerts}
    for ws in decided:
        m = dead.marker(ws) or {}
        assert m["state"] == "decided"
        assert [DriftAlert.model_validate(a) for a in m["alerts"]] == [
            a for a in alerts if a.window_start_ts == ws
        ]
    other = _closing_store(client, namespace, "other")
    leftover = other.close_ready(now=1031.0)  # windows without alerts are evaluated again
    assert {s.window_start_ts for s in leftover}.isdisjoint(decided)
    assert other.recovered == alerts  # the very alerts decided: same ids, same payloads
    assert policy.decide(leftover, model="fraud", version=3, windows=other.windows) == []
    # The policy counted them once: the state is the one saved with the decision (the leftover
    # windows' signals had already been seen and suppressed, so they change nothing).
    assert (
        json.loads(client.get(policy.key) or b"{}")["policy"]["ids"]
        == json.loads(state or b"{}")["policy"]["ids"]
    )
    assert [json.loads(x)["id"] for x in client.lrange(f"{{{namespace}:drift:fraud:3}}:~alerts", 0, -1)] == [
        a.id for a in reversed(alerts)
    ]
    other.mark_published()
    assert {(other.marker(ws) or {})["state"] for ws in decided} == {"published"}
    assert other.close_ready(now=9000.0) == [] and other.recovered == []


def test_a_rewound_batch_publishes_its_windows_again(client: redis.Redis, namespace: str) -> None:
    stream = _stream()
    policy = _policy(client, namespace)
    store = _closing_store(client, namespace, "w")
    _fill(store, stream, T0 + 300)
    signals = store.close_ready(now=1000.0)
    alerts, _ = split_outputs(
        policy.decide(signals, model="fraud", version=3, windows=store.windows, record=store.record_decision)
    )
    store.abandon()  # the produce failed: the batch is redone
    leftover = store.close_ready(now=1000.5)  # at once: no timeout for its own rewound windows
    assert {s.window_start_ts for s in leftover}.isdisjoint({a.window_start_ts for a in alerts})
    assert store.recovered == alerts
    assert policy.decide(leftover, model="fraud", version=3, windows=store.windows) == []
    store.mark_published()
    assert client.zcard(store.pending_key) == 0


def test_a_slow_owner_does_not_publish_a_close_taken_over_from_it(
    client: redis.Redis, namespace: str
) -> None:
    stream = _stream()
    slow = _closing_store(client, namespace, "slow")
    _fill(slow, stream, T0 + 300)
    signals = slow.close_ready(now=1000.0)
    other = _closing_store(client, namespace, "other")
    assert other.close_ready(now=1031.0)  # slow is past the timeout: taken over
    slow.mark_published()  # slow committed after all, but the close is no longer its own
    ws = signals[0].window_start_ts
    assert (slow.marker(ws) or {})["state"] == "pending" and client.zcard(slow.pending_key) == 9
    other.mark_published()
    assert (other.marker(ws) or {})["state"] == "published" and client.zcard(slow.pending_key) == 0


def test_adwin_alerts_wait_in_the_outbox_until_published(client: redis.Redis, namespace: str) -> None:
    policy = _policy(client, namespace)
    dead = _closing_store(client, namespace, "dead")
    dead.close_ready(now=1000.0)  # nothing to close: just its clock
    cut = DriftSignal(
        detector="adwin", feature="__score__", statistic=0.8, threshold=0.5, severity="critical",
        window_start_ts=T0, window_end_ts=T0 + 50, window_start_index=0, window_end_index=5000,
        n_window=5000, n_reference=5000, message="score moved", partition=2, window_offsets={2: (40, 5039)},
    )  # fmt: skip
    (alert,) = policy.decide([cut], model="fraud", version=3, record=dead.record_decision)
    assert dead.outbox == {alert.id} and client.hlen(dead.outbox_key) == 1
    # killed before producing it; the policy would now drop the re-detected cut as emitted...
    assert policy.decide([cut], model="fraud", version=3) == []
    # ...but the outbox keeps it: another worker publishes it once the owner timed out
    other = _closing_store(client, namespace, "other")
    other.close_ready(now=1010.0)
    assert other.recovered == []
    other.close_ready(now=1031.0)
    assert other.recovered == [alert] and other.outbox == {alert.id}
    third = _closing_store(client, namespace, "third")
    third.close_ready(now=1032.0)
    assert third.recovered == []  # taken over once
    other.mark_published()
    assert client.hlen(other.outbox_key) == 0 and other.outbox == set()
    third.close_ready(now=9000.0)
    assert third.recovered == []
