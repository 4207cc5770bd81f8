"""Incidents from the worker's drift stage on real Redis: a lasting drift is one incident that
opens once, updates a few times and resolves after the drift stops; two workers share it; a new
production version supersedes it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from detectors.incidents import DriftIncident, IncidentEvent, split_outputs
from inference.metadata import Deployment, Distribution, FeatureSpec, ModelVersion
from stream.drift import DriftConfig, DriftStage, incidents_key

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
WINDOW = 600.0
FEATURES = ("x", "y", "z")


def _meta(version: int = 1) -> ModelVersion:
    rng = np.random.default_rng(0)
    ref = {
        f: Distribution(kind="numeric", sample=rng.normal(size=5000).tolist(), count=5000) for f in FEATURES
    }
    return ModelVersion(
        name="fraud",
        version=version,
        sha256="0" * 64,
        features=[FeatureSpec(name=f, kind="numeric") for f in FEATURES],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="production",
        reference=ref,
        score_reference=Distribution(kind="numeric", sample=rng.random(5000).tolist(), count=5000),
    )


def _stage(r: redis.Redis, ns: str, worker: str) -> DriftStage:
    cfg = DriftConfig(window_seconds=WINDOW, allowed_lateness=0, idle_timeout_seconds=None)
    stage = DriftStage(r, ns, CollectorRegistry(), cfg, monitored=set(FEATURES), worker_id=worker)
    stage.set_partitions([0, 1])
    return stage


def test_a_lasting_drift_over_20_windows_is_one_incident_resolved_after_it_stops(
    redis_ns: tuple[redis.Redis, str],
) -> None:
    r, ns = redis_ns
    meta = _meta()
    # Two workers, one partition each: each sees half of every window.
    stages = {0: _stage(r, ns, "w0"), 1: _stage(r, ns, "w1")}
    rng = np.random.default_rng(3)
    offsets = {0: 0, 1: 0}
    events: list[IncidentEvent] = []
    signals = 0
    windows = 32  # 4 calm, 20 drifted (x from the 5th, y from the 10th), 8 calm again
    for w in range(windows):
        for half in range(4):  # four batches per window and partition
            for p, stage in stages.items():
                n = 300
                drifted = 4 <= w < 24
                cols = {f: rng.normal(size=n) for f in FEATURES}
                if drifted:
                    cols["x"] = cols["x"] + 0.8
                if 9 <= w < 24:
                    cols["y"] = cols["y"] * 2.0
                ts = T0 + w * WINDOW + (half + np.sort(rng.random(n))) * WINDOW / 4
                offs = offsets[p] + np.arange(n)
                offsets[p] += n
                out = stage.observe(meta, cols, np.arange(n), rng.random(n), ts, np.full(n, p), offs)
                stage.checkpoint()
                stage.published()
                alerts, evs = split_outputs(out)
                signals += len(alerts)
                events += evs
    kinds = Counter(e.kind for e in events)
    assert kinds["opened"] == 1, [(e.kind, e.summary) for e in events]
    assert kinds["updated"] <= 4, [(e.kind, e.changes) for e in events]
    assert kinds["resolved"] == 1 and events[-1].kind == "resolved", [(e.kind, e.changes) for e in events]
    print(f"{final_signals(events)} signals attached, {signals} alerts, {len(events)} incident events")
    assert final_signals(events) > 3 * len(events)  # many signals, a few lifecycle events
    assert len({e.incident_id for e in events}) == 1 and len({e.id for e in events}) == len(events)
    final = events[-1].incident
    assert final.resolution == "quiet" and {"x", "y"} <= {f.feature for f in final.features}
    assert (
        final.first_window.start_ts >= T0 + 3 * WINDOW
    )  # not long before the drift began (CUSUM: when it left 0)
    assert final.resolved_ts is not None and final.resolved_ts >= T0 + 24 * WINDOW
    stored = DriftIncident.model_validate_json(
        r.hget(incidents_key(ns, final.model, final.version), final.id) or b"{}"
    )
    assert stored.state == "resolved" and stored.revision == final.revision


def final_signals(events: list[IncidentEvent]) -> int:
    return events[-1].incident.signals


def test_a_version_no_longer_served_has_its_incident_superseded_once(
    redis_ns: tuple[redis.Redis, str],
) -> None:
    r, ns = redis_ns
    a, b = _stage(r, ns, "w0"), _stage(r, ns, "w1")
    rng = np.random.default_rng(4)
    events: list[IncidentEvent] = []
    off = 0
    for w in range(4):  # a drift on version 1 from the start: its incident opens
        n = 600
        cols = {f: rng.normal(size=n) + 1.0 for f in FEATURES}
        ts = T0 + w * WINDOW + np.sort(rng.random(n)) * WINDOW
        p = np.zeros(n, dtype=np.int64)
        p[n // 2 :] = 1
        out = a.observe(_meta(1), cols, np.arange(n), rng.random(n), ts, p, off + np.arange(n))
        a.published()
        off += n
        events += split_outputs(out)[1]
    assert [e.kind for e in events] == ["opened"]
    later = T0 + 10 * WINDOW + np.arange(10.0)

    def serve(canary: int | None) -> None:
        deployment = Deployment(
            name="fraud", production=_meta(2), canary=_meta(canary) if canary else None,
            canary_fraction=0.1 if canary else 0.0, shadow=None,
        )  # fmt: skip
        for stage in (a, b, a):  # both workers swap, one of them twice (a restart, a re-poll)
            stage.deployed(deployment)
            out = stage.observe(
                _meta(2), {f: rng.normal(size=10) for f in FEATURES}, np.arange(10), rng.random(10),
                later, np.zeros(10, dtype=np.int64), 10_000 + np.arange(10),
            )  # fmt: skip
            stage.published()
            events.extend(e for e in split_outputs(out)[1] if e.version == 1)

    serve(canary=1)  # version 2 is promoted, version 1 stays on as a canary: still served, still open
    assert [e.kind for e in events] == ["opened"]
    serve(canary=None)  # version 1 no longer served: its incident resolves, once
    resolved = [e for e in events if e.kind == "resolved"]
    assert len(resolved) == 1 and resolved[0].incident.resolution == "superseded"
    assert resolved[0].incident.superseded_by == 2 and resolved[0].version == 1
