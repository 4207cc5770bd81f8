"""A low-rate stream through a real worker: one event per 5 minutes of event time, so a 300 s
drift window holds about one event. Windows wait for `drift_min_window_events` (default 500)
before they are evaluated, so a categorical feature whose mix changes half way is alerted on,
and the same stream without the change is not."""

from __future__ import annotations

import itertools

import pytest

from detectors.alerts import DriftAlert
from detectors.incidents import DriftIncident
from detectors.signals import WindowStat
from detectors.window_store import WINDOWED_DETECTORS
from driftline.redis_keys import RedisClient
from driftline.settings import Settings
from driftline.wiring import redis_client
from stream.drift import history_key, incidents_key
from stream.producer import EventProducer, produce_synthetic
from stream.synthetic import DriftSchedule, FraudGenerator
from stream.topics import Topics
from tests.helpers import consume_all
from tests.integration.worker_support import drain, register, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu-heavy")]

START = 1.7e9
N = 4000
GAP = 300.0  # mean event-time gap: one event per 5 minutes, ~1 per 300 s window
CHANGED = "merchant_category"


def _produce(s: Settings, change: bool) -> float:
    """The stream; the merchant-category mix moves at its midpoint (numeric features do not:
    ``shift=0``). Returns the event time of the change."""
    schedule = DriftSchedule(covariate_at=N // 2 if change else None, shift=0.0)
    gen = FraudGenerator(seed=21, entities=600, schedule=schedule, start_ts=START, mean_gap_s=GAP)
    batches = list(gen.batches(N))
    topics = Topics(s.topic_prefix)
    producer = EventProducer(s.kafka_client_config())
    produce_synthetic(producer, batches, topics.events, topics.labels, label_delay=10)
    tally = producer.flush()
    assert tally.failed == 0 and tally.delivered == tally.sent
    first_half = batches[0].ts[: N // 2]  # one batch of up to 5,000 events
    return float(first_half[-1])


def _history(r: RedisClient, s: Settings) -> list[WindowStat]:
    return [
        WindowStat.model_validate_json(x) for x in r.lrange(history_key(s.topic_prefix, "fraud", 1), 0, -1)
    ]


@pytest.mark.parametrize("change", [True, False], ids=["mix-changes", "control"])
def test_a_low_rate_streams_categorical_drift_is_alerted(own_settings: Settings, change: bool) -> None:
    s = own_settings
    assert s.drift_window_seconds == 300.0 and s.drift_min_window_events == 500  # the defaults
    register(s)
    changed_at = _produce(s, change)
    drain(s, start_worker(s))
    stats = [w for w in _history(redis_client(s), s) if w.detector in WINDOWED_DETECTORS]
    psi = [w for w in stats if (w.feature, w.detector) == (CHANGED, "psi")]
    # Merged windows of >= 500 events, each spanning many 300 s windows (~1.5 days of event time).
    assert len(psi) >= 6, [(w.window_start_ts, w.window_end_ts, w.n_window) for w in psi]
    assert all(w.n_window >= 500 and w.window_start_ts is not None for w in psi)
    assert all(w.window_end_ts - (w.window_start_ts or 0) >= 100 * s.drift_window_seconds for w in psi)
    spans = sorted((w.window_start_ts or 0, w.window_end_ts) for w in psi)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # each event in one window
    alerts = [
        DriftAlert.model_validate_json(x.value) for x in consume_all(s, Topics(s.topic_prefix).signals, 0, 10)
    ]
    incidents = [
        DriftIncident.model_validate_json(raw)
        for raw in redis_client(s).hvals(incidents_key(s.topic_prefix, "fraud", 1))
    ]
    naming = [i for i in incidents if i.feature(CHANGED) is not None]
    windowed = [a for a in alerts if a.detector in WINDOWED_DETECTORS]
    if change:
        hits = [a for a in windowed if (a.feature, a.detector) == (CHANGED, "psi")]
        assert hits, [(a.feature, a.detector) for a in alerts]
        assert all((a.window_end_ts or 0) > changed_at and a.n_window >= 500 for a in hits)
        before = [w for w in psi if w.window_end_ts <= changed_at]
        after = [w for w in psi if (w.window_start_ts or 0) > changed_at]
        assert before and after and max(w.statistic for w in before) < 0.1 < min(w.statistic for w in after)
        assert len(naming) == 1, [i.summary for i in incidents]  # its incident names the categorical
        assert CHANGED in naming[0].summary
    else:
        assert windowed == [], [(a.feature, a.detector, a.statistic) for a in windowed]
        assert naming == [], [i.summary for i in incidents]
        assert max(w.statistic for w in psi) < 0.1
