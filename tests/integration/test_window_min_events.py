"""Merged windows that wait for a minimum number of events (`WindowStore(min_window_events=...)`),
against the real Redis: an under-minimum window takes the next ones in, the emitted span and
size are those of the events merged, and several workers still decide each merged window once."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import pytest
import redis

from detectors.ks import KSWindow
from detectors.monitor import MonitorConfig
from detectors.psi import PSIWindow
from detectors.reference import as_float
from detectors.signals import DriftSignal, WindowStat
from detectors.window_store import WindowStore, sample_keys
from detectors.windowing import ClosedWindow
from tests.integration.test_detectors_window_store import PARTITIONS, Stream, _batches, _columns, _references

pytestmark = pytest.mark.integration

T0 = 1_764_000_000.0  # a multiple of WINDOW
WINDOW = 30.0
LATENESS = 2.0
MIN_EVENTS = 100
KS_SIZE, KS_RATE = 40, 0.6
N = 3000  # ~40 events a window: ~3 windows per merged one


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    r.ping()
    yield r
    r.close()


@pytest.fixture
def namespace(new_prefix: Callable[[str], str]) -> str:
    return new_prefix("minev")


def _store(client: redis.Redis, ns: str, worker: str, min_events: int = MIN_EVENTS) -> WindowStore:
    refs, score_ref = _references()
    return WindowStore(
        client, ns, "fraud", 3, refs, score_reference=score_ref, window_seconds=WINDOW,
        allowed_lateness=LATENESS, partitions=PARTITIONS, ks_sample_size=KS_SIZE, ks_sample_rate=KS_RATE,
        config=MonitorConfig(min_count=30), worker_id=worker, min_window_events=min_events,
        close_timeout_seconds=30.0,
    )  # fmt: skip


def _low_rate_stream(seed: int = 11) -> Stream:
    """~1.3 events/s of event time (irregular gaps, some windows empty), drifting half way."""
    rng = np.random.default_rng(seed)
    cols = _columns(rng, N)
    gaps = rng.exponential(0.75, N)
    gaps[rng.random(N) < 0.01] += 3 * WINDOW  # a few gaps longer than a window: empty windows
    ts = T0 + np.cumsum(gaps)
    half = ts >= ts[N // 2]
    cols["risk"][half] += 1.5
    cols["country"][half & (rng.random(N) < 0.4)] = "XX"
    part = rng.integers(0, len(PARTITIONS), N)
    offset = np.zeros(N, dtype=np.int64)
    for p in PARTITIONS:
        m = part == p
        offset[m] = 500 + np.arange(m.sum())
    return Stream(ts, part, offset, cols, rng.random(N))


def _expected_spans(ts: np.ndarray, watermark: float) -> list[tuple[float, float, int]]:
    """The merged windows a greedy pass over the non-empty windows gives: (start, end, events),
    each closed once its last window is due."""
    k, n = np.unique(np.floor(ts / WINDOW).astype(np.int64), return_counts=True)
    spans, head, total = [], None, 0
    for w, c in zip(k.tolist(), n.tolist(), strict=True):
        if (w + 1) * WINDOW + LATENESS > watermark:
            break
        head = w if head is None else head
        total += c
        if total >= MIN_EVENTS:
            spans.append((head * WINDOW, (w + 1) * WINDOW, total))
            head, total = None, 0
    return spans


def _run(
    client: redis.Redis, ns: str, stream: Stream, assignment: list[list[int]], seed: int, replay: float = 0.0
) -> tuple[list[WindowStat], list[DriftSignal], Counter[int]]:
    rng = np.random.default_rng(seed)
    stores = [_store(client, ns, f"w{i}") for i in range(len(assignment))]
    queues = [_batches(np.flatnonzero(np.isin(stream.partition, parts)), rng) for parts in assignment]
    done = [0] * len(stores)
    stats: list[WindowStat] = []
    signals: list[DriftSignal] = []
    closed_by: Counter[int] = Counter()  # merged windows each worker evaluated
    while any(d < len(q) for d, q in zip(done, queues, strict=True)):
        w = int(rng.choice([i for i, q in enumerate(queues) if done[i] < len(q)]))
        cols, ts, part, off, scores = stream.take(queues[w][done[w]])
        assert stores[w].add(cols, ts, part, off, scores=scores).late == 0
        if done[w] and rng.random() < replay:  # the previous poll again (a crash before its commit)
            again = stream.take(queues[w][done[w] - 1])
            assert stores[w].add(*again[:4], scores=again[4]).added == 0
        signals += stores[w].close_ready()
        stats += stores[w].windows
        closed_by[w] += len({s.window_start_ts for s in stores[w].windows})
        stores[w].mark_published()
        done[w] += 1
    return stats, signals, closed_by


def _inside(stream: Stream, start: float, end: float) -> np.ndarray:
    return (stream.ts >= start) & (stream.ts < end)


def test_an_under_minimum_window_takes_the_next_ones_in(client: redis.Redis, namespace: str) -> None:
    stream = _low_rate_stream()
    stats, signals, _ = _run(client, namespace, stream, [PARTITIONS], seed=1)
    store = _store(client, namespace, "reader")
    per_window = Counter(np.floor(stream.ts / WINDOW).tolist())
    assert max(per_window.values()) < MIN_EVENTS  # no window holds enough events on its own
    expected = _expected_spans(stream.ts, store.watermark())
    assert len(expected) >= 20
    psi = [s for s in stats if (s.feature, s.detector) == ("amount", "psi")]
    assert [(s.window_start_ts, s.window_end_ts, s.n_window) for s in psi] == expected
    assert {s.window_end_ts - (s.window_start_ts or 0.0) for s in psi} != {
        WINDOW
    }  # real spans, several windows
    refs, _ = _references()
    trimmed = 0
    for start, end, n in expected:
        inside = _inside(stream, start, end)
        window = ClosedWindow((), start, end, 0, 1, n)
        for feature in ("amount", "country"):  # merged counts are exact: PSI as computed locally
            local = PSIWindow(refs[feature], feature, window_seconds=WINDOW, min_count=1)
            truth = local.evaluate_counts(local.bin_counts(stream.columns[feature][inside]), window)
            got = next(
                s for s in stats if (s.feature, s.detector, s.window_start_ts) == (feature, "psi", start)
            )
            assert truth is not None and got.statistic == pytest.approx(truth.statistic, abs=1e-12)
        amount = stream.columns["amount"][inside]
        missing = next(
            s
            for s in stats
            if (s.feature, s.detector, s.window_start_ts) == ("amount", "missing_rate", start)
        )
        assert (missing.n_window, missing.statistic) == (n, pytest.approx(np.isnan(amount).mean()))
        # KS: the bottom-KS_SIZE sample of the whole span (the merged windows' samples unioned, trimmed)
        u = sample_keys(stream.partition[inside], stream.offset[inside])
        x = as_float(stream.columns["risk"][inside])
        take = (u < KS_RATE) & np.isfinite(x)
        sample = x[take][np.argsort(u[take], kind="stable")][:KS_SIZE]
        trimmed += int(take.sum() > KS_SIZE)
        truth_ks = KSWindow(refs["risk"], "risk", window_seconds=WINDOW, min_count=1).evaluate_values(
            sample, window
        )
        got_ks = next(s for s in stats if (s.feature, s.detector, s.window_start_ts) == ("risk", "ks", start))
        assert truth_ks is not None and got_ks.n_window == sample.size
        assert got_ks.statistic == pytest.approx(truth_ks.statistic, abs=1e-12)
    assert trimmed > len(expected) // 2  # most spans sampled more than KS_SIZE values: unions trimmed
    # the drift was found, on merged windows, and its alerts name the offsets of the whole span
    assert {("risk", "psi"), ("risk", "ks"), ("country", "psi")} <= {(s.feature, s.detector) for s in signals}
    for sig in signals:
        inside = _inside(stream, sig.window_start_ts, sig.window_end_ts)
        assert sig.n_window >= MIN_EVENTS or sig.detector == "ks"
        assert sig.window_offsets == {
            p: (int(stream.offset[inside & (stream.partition == p)].min()),
                int(stream.offset[inside & (stream.partition == p)].max()))
            for p in PARTITIONS
        }  # fmt: skip
    # the windows merged away are closed ("merged", pointing to their head) and their data moved
    start, end, _ = expected[0]
    later = sorted(
        {float(w) for w in np.floor(stream.ts[_inside(stream, start, end)] / WINDOW) * WINDOW} - {start}
    )
    assert later and all((store.marker(ws) or {}).get("state") == "merged" for ws in later)
    assert {(store.marker(ws) or {}).get("into") for ws in later} == {int(start)}
    assert all(client.exists(store.feature_key("amount", ws)) == 0 for ws in later)


def test_two_workers_decide_each_merged_window_once_and_alike(client: redis.Redis, namespace: str) -> None:
    stream = _low_rate_stream(seed=12)
    one, one_signals, _ = _run(client, f"{namespace}:one", stream, [PARTITIONS], seed=2)
    two, two_signals, closed_by = _run(
        client, f"{namespace}:two", stream, [[0, 2, 4], [1, 3, 5]], seed=3, replay=0.2
    )

    def key(s: WindowStat) -> tuple[str, str, float | None, float]:
        return (s.feature, s.detector, s.window_start_ts, s.window_end_ts)

    counts = Counter(key(s) for s in two)
    assert set(counts.values()) == {1}  # each merged window evaluated once, by one of the two
    assert {key(s): (s.statistic, s.n_window) for s in one} == {
        key(s): (s.statistic, s.n_window) for s in two
    }
    assert [s.model_dump() for s in one_signals] == [s.model_dump() for s in two_signals] and one_signals
    spans = sorted({(s.window_start_ts or 0.0, s.window_end_ts) for s in two})
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no event in two windows
    assert closed_by[0] and closed_by[1], closed_by  # both workers closed some of them


def _add(store: WindowStore, ts: list[float], first_offset: int) -> int:
    """Events on partition 0 only; returns how many were late."""
    t = np.array(ts)
    n = t.size
    rng = np.random.default_rng(first_offset)
    cols = {
        "amount": rng.lognormal(3.0, 1.0, n),
        "risk": rng.normal(size=n),
        "country": np.full(n, "DE", object),
    }
    return store.add(
        cols, t, np.zeros(n, dtype=np.int64), first_offset + np.arange(n), scores=rng.random(n)
    ).late


def _open_windows(client: redis.Redis, store: WindowStore) -> list[float]:
    raw = cast(list[bytes], client.zrange(store.windows_key, 0, -1))
    return sorted(float(w) for w in raw)


def _spread(start: float, n: int) -> list[float]:
    return (start + np.arange(n) * (WINDOW / n)).tolist()


def test_late_events_of_a_merged_window_are_dropped_and_a_stopped_stream_leaves_the_head_open(
    client: redis.Redis, namespace: str
) -> None:
    refs, score_ref = _references()
    store = WindowStore(
        client, namespace, "m", 1, refs, score_reference=score_ref, window_seconds=WINDOW,
        allowed_lateness=LATENESS, partitions=[0], config=MonitorConfig(min_count=30), worker_id="w",
        min_window_events=MIN_EVENTS,
    )  # fmt: skip
    assert _add(store, _spread(T0, 40) + _spread(T0 + 30, 40) + [T0 + 65], 0) == 0
    assert store.close_ready() == [] and store.windows == []  # windows 0 and 1 due: 80 events, kept open
    assert (store.marker(T0 + 30) or {})["state"] == "merged" and store.marker(T0) is None
    assert _open_windows(client, store) == [T0, T0 + 60]
    # late: an event of the merged window is dropped; one of the head's own range still counts
    assert _add(store, [T0 + 40], 100) == 1
    assert _add(store, [T0 + 5], 101) == 0
    assert int(store.merged_counts("amount", T0).sum()) == 81
    assert _add(store, [*_spread(T0 + 66, 30)[:-6], T0 + 100], 102) == 0  # window 2 complete: 81 + 25
    store.close_ready()
    (psi,) = [s for s in store.windows if (s.feature, s.detector) == ("amount", "psi")]
    assert (psi.window_start_ts, psi.window_end_ts, psi.n_window) == (T0, T0 + 90, 106)
    assert psi.window_end_index == round(T0 / WINDOW) + 3  # window numbers: k .. k + 3
    assert (store.marker(T0) or {})["state"] == "pending"
    store.mark_published()
    assert _add(store, [T0 + 10], 200) == 1  # the merged window is decided: late now
    # The stream stops with an under-minimum window due: it stays open, undecided, its events kept.
    assert _add(store, [T0 + 200], 201) == 0
    assert store.close_ready() == [] and store.windows == []
    assert store.marker(T0 + 90) is None and int(store.merged_counts("amount", T0 + 90).sum()) == 1
    assert T0 + 90 in _open_windows(client, store)
    # with min_window_events=1 (today's behaviour) the same window closes alone
    eager = WindowStore(
        client, namespace, "m", 1, refs, score_reference=score_ref, window_seconds=WINDOW,
        allowed_lateness=LATENESS, partitions=[0], config=MonitorConfig(min_count=1), worker_id="e",
    )  # fmt: skip
    eager.close_ready()
    assert {(s.window_start_ts, s.window_end_ts, s.n_window) for s in eager.windows} == {
        (T0 + 90, T0 + 120, 1)
    }


def test_a_merged_window_whose_owner_died_is_taken_over_with_its_span(
    client: redis.Redis, namespace: str
) -> None:
    stream = _low_rate_stream(seed=13)
    dead = _store(client, namespace, "dead")
    head = np.flatnonzero(stream.ts < T0 + 600)
    dead.add(*stream.take(head)[:4], scores=stream.scores[head])
    signals = dead.close_ready(now=1000.0)  # claimed and evaluated, then SIGKILL: nothing published
    assert dead.windows and {s.window_end_ts - (s.window_start_ts or 0) for s in dead.windows} != {WINDOW}
    other = _store(client, namespace, "other")
    assert other.close_ready(now=1010.0) == [] and other.windows == []  # still in flight
    again = other.close_ready(now=1031.0)
    assert [s.model_dump() for s in other.windows] == [s.model_dump() for s in dead.windows]
    assert [s.model_dump() for s in again] == [s.model_dump() for s in signals]
