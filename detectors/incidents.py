"""From signals to incidents: one change of one model version is one `DriftIncident`.

A drift episode makes many detectors fire many times: PSI and KS on every drifted feature in
every window, ADWIN and CUSUM once per partition, the error-rate detector every couple of
thousand labels while the old model serves. `AlertPolicy` folds some of that; what a human is
paged on is the incident. `IncidentBook.observe` takes the same inputs as the policy (the
signals of a batch and the statistics of every evaluated window) and returns `IncidentEvent` s:

* **opened** by the first critical signal of a model version, or by ``open_warnings`` warnings
  within ``warning_window_seconds`` of event time;
* while it is open, every further signal of that version - any feature, detector, the score, the
  error stream - is **attached**: per feature it keeps the strongest statistic (relative to its
  threshold), which detectors agreed, and the first and latest window (event time and offsets);
  severity escalates warning -> critical and never goes back down while open;
* **updated** only when something material changes - a new feature, a new detector kind, an
  escalation - and at most once per ``update_interval_seconds`` of event time (an escalation is
  sent at once);
* **resolved** when every member (feature, detector) is quiet: a windowed one (PSI, KS, missing
  rate) has had ``resolve_windows`` closed windows in a row under ``threshold * hysteresis_ratio``
  since its last signal (windows, not time: a merged window of a low-rate stream spans as long
  as it needs to hold enough events); a change-point one (ADWIN, CUSUM, error rate: one signal
  per change, no window statistics) has not signalled for ``resolve_windows`` windows of event
  time - except the error stream (`__error__`): a model that got worse stays worse until another
  version serves, so an incident it joined resolves only by `supersede`, when another version
  takes over production.

Ids are deterministic: an incident's is a hash of its model, version and opening signal, an
event's is ``<incident id>:<revision>``, so replays and every worker agree on them. The book is
pure and JSON-checkpointed (`state` / `from_state`); `detectors.policy_store.SharedAlertPolicy`
keeps one per model version in Redis next to the alert policy, shared by every worker.

>>> sig = DriftSignal(detector="psi", feature="amount", statistic=0.4, threshold=0.2, severity="critical",
...                   window_start_ts=0.0, window_end_ts=300.0, window_start_index=0, window_end_index=5000,
...                   n_window=5000, n_reference=5000, message="amount: PSI 0.4 >= 0.2")
>>> book = IncidentBook(IncidentConfig(resolve_windows=2, window_seconds=300))
>>> [e.kind for e in book.observe([sig], model="fraud", version=3)]
['opened']
>>> calm = WindowStat(detector="psi", feature="amount", statistic=0.01, threshold=0.2,
...                   window_end_ts=600.0, window_end_index=9000, n_window=4000)
>>> book.observe([], model="fraud", version=3, windows=[calm])
[]
>>> [(e.kind, e.incident.resolution) for e in book.observe([], model="fraud", version=3,
...     windows=[calm.model_copy(update={"window_end_ts": 900.0})])]
[('resolved', 'quiet')]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.alerts import CHANGE_POINT_DETECTORS, DriftAlert, alert_id
from detectors.signals import (
    ERROR_FEATURE,
    SCORE_FEATURE,
    DetectorName,
    DriftSignal,
    Severity,
    WindowStat,
    fmt,
)

IncidentState = Literal["open", "resolved"]
IncidentKind = Literal["opened", "updated", "resolved"]
_RANK = {"warning": 1, "critical": 2}
_MAX_ALERT_IDS = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentConfig(_Model):
    """When incidents open, update and resolve (event-time durations, like the policy's cooldown)."""

    open_warnings: int = Field(3, ge=1)
    """Warnings (within ``warning_window_seconds``) that open an incident; one critical always does."""
    warning_window_seconds: float = Field(3600.0, gt=0)
    resolve_windows: int = Field(6, ge=1)
    """Windows every member must stay quiet for the incident to resolve."""
    window_seconds: float = Field(300.0, gt=0)
    """The drift windows' length: a change-point member is quiet after ``resolve_windows`` of them."""
    hysteresis_ratio: float = Field(0.8, gt=0, le=1)
    update_interval_seconds: float = Field(1800.0, ge=0)
    """At most one ``updated`` per this much event time (escalations excepted)."""

    @property
    def quiet_seconds(self) -> float:
        return self.resolve_windows * self.window_seconds


class IncidentWindow(_Model):
    """A window of evidence: event-time span and, per partition, its first and last Kafka offset."""

    start_ts: float
    end_ts: float
    offsets: dict[int, tuple[int, int]] = Field(default_factory=dict)


class FeatureEvidence(_Model):
    """What an incident holds about one feature (or ``__score__`` / ``__error__``)."""

    feature: str
    detector: DetectorName
    """The detector of the strongest signal."""
    statistic: float
    threshold: float
    effect_size: float | None = None
    p_value: float | None = None
    severity: Severity
    detectors: list[DetectorName]
    """Every detector that signalled on this feature during the incident."""
    signals: int
    first_ts: float
    latest_ts: float
    message: str
    """The strongest signal's message."""

    @property
    def strength(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else self.statistic


class DriftIncident(_Model):
    """One change episode of one model version: the unit users are paged on."""

    id: str
    model: str
    version: int
    state: IncidentState
    severity: Severity
    summary: str
    features: list[FeatureEvidence]
    """Strongest first."""
    opened_at: datetime
    """Processing time of the opening (UTC)."""
    first_window: IncidentWindow
    latest_window: IncidentWindow
    resolved_ts: float | None = None
    """Event time of the resolution."""
    resolution: Literal["quiet", "superseded"] | None = None
    superseded_by: int | None = None
    revision: int = 0
    signals: int = 0
    alert_ids: list[str] = Field(default_factory=list)
    """Ids of the last signals attached (as `DriftAlert` ids would be), newest last."""

    def feature(self, name: str) -> FeatureEvidence | None:
        return next((f for f in self.features if f.feature == name), None)


class IncidentEvent(_Model):
    """A lifecycle event of an incident, as published to ``<prefix>.alerts`` (key: ``incident_id``)."""

    id: str
    """``<incident_id>:<revision>``: the same on every replay."""
    incident_id: str
    kind: IncidentKind
    ts: datetime
    model: str
    version: int
    severity: Severity
    summary: str
    changes: list[str] = Field(default_factory=list)
    """What made this event (for ``updated``: the new features, detectors or severity)."""
    incident: DriftIncident


DriftOutput = DriftAlert | IncidentEvent
"""What the shared policy decides: per-signal alerts and incident lifecycle events."""


def parse_output(doc: dict[str, Any]) -> DriftOutput:
    """A stored decision back into its model (incident events have an ``incident_id``)."""
    if "incident_id" in doc:
        return IncidentEvent.model_validate(doc)
    return DriftAlert.model_validate(doc)


def split_outputs(outputs: Iterable[DriftOutput]) -> tuple[list[DriftAlert], list[IncidentEvent]]:
    """(the per-signal alerts, the incident events) of a decision."""
    alerts, events = [], []
    for o in outputs:
        if isinstance(o, IncidentEvent):
            events.append(o)
        else:
            alerts.append(o)
    return alerts, events


def incident_id(model: str, version: int, opening_alert_id: str) -> str:
    """Deterministic incident id: model, version and the signal that opened it."""
    raw = "\x1f".join(["incident", model, str(version), opening_alert_id])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _signal_id(s: DriftSignal, model: str, version: int) -> str:
    return alert_id(
        model, version, s.detector, s.feature, s.window_start_ts, s.window_end_ts,
        s.window_start_index, s.window_end_index,
    )  # fmt: skip


def _window(s: DriftSignal) -> IncidentWindow:
    return IncidentWindow(start_ts=s.window_start_ts, end_ts=s.window_end_ts, offsets=dict(s.window_offsets))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def summarize(features: Sequence[FeatureEvidence], since_ts: float) -> str:
    """One line for a human, e.g. "covariate drift on amount, device; score shifted (effect +0.7); since …".

    >>> f = FeatureEvidence(feature="amount", detector="psi", statistic=0.4, threshold=0.2,
    ...                     severity="critical", detectors=["psi", "ks"], signals=3, first_ts=0,
    ...                     latest_ts=600, message="")
    >>> summarize([f], 0.0)
    'covariate drift on amount; since 1970-01-01 00:00 event time'
    """
    parts: list[str] = []
    inputs = [f for f in features if f.feature not in (SCORE_FEATURE, ERROR_FEATURE)]
    shifted = [f.feature for f in inputs if set(f.detectors) != {"missing_rate"}]
    missing = [f.feature for f in inputs if set(f.detectors) == {"missing_rate"}]
    error = next((f for f in features if f.feature == ERROR_FEATURE), None)
    score = next((f for f in features if f.feature == SCORE_FEATURE), None)
    if error is not None:
        parts.append(f"concept drift: {error.detector} {fmt(error.statistic)} >= {fmt(error.threshold)}")
    if shifted:
        parts.append("covariate drift on " + ", ".join(shifted))
    if missing:
        parts.append("more missing values in " + ", ".join(missing))
    if score is not None:
        effect = f" (effect {score.effect_size:+.2g})" if score.effect_size is not None else ""
        parts.append(f"score shifted{effect}")
    return "; ".join(parts or ["drift"]) + f"; since {_when(since_ts)} event time"


@dataclass
class _Member:
    """One (feature, detector) of the open incident: when it last signalled, how quiet it has been."""

    feature: str
    last_signal_ts: float
    threshold: float
    windowed: bool
    """PSI, KS, missing rate: judged by its windows; the others by the time since their last signal."""
    quiet_windows: int = 0
    """Windows in a row under ``threshold * hysteresis`` since the last signal."""
    last_stat_ts: float = float("-inf")


def _finite(x: float) -> float | None:
    return x if x > float("-inf") else None


class IncidentBook:
    """The incidents of one model version (see the module docstring)."""

    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = config or IncidentConfig()
        self.open: DriftIncident | None = None
        self.clock = float("-inf")  # the newest event time seen
        self._members: dict[tuple[str, str], _Member] = {}
        self._warnings: list[tuple[float, DriftSignal]] = []  # before an incident opens
        self._changes: list[str] = []  # material changes not yet sent (rate limit)
        self._last_update_ts = float("-inf")
        self.changed: list[DriftIncident] = []
        """Incidents whose state changed in the last call (evidence attached, events sent)."""

    def observe(
        self,
        signals: Sequence[DriftSignal],
        *,
        model: str,
        version: int,
        windows: Iterable[WindowStat] = (),
        now: datetime | None = None,
    ) -> list[IncidentEvent]:
        """The lifecycle events `signals` and `windows` (every evaluated window) cause."""
        now = now or datetime.now(UTC)
        self.changed = []
        stats = list(windows)
        ordered = sorted(signals, key=lambda s: (s.window_end_ts, -_RANK[s.severity], s.feature, s.detector))
        for w in stats:
            self.clock = max(self.clock, w.window_end_ts)
            m = self._members.get((w.feature, w.detector))
            if m is not None and w.window_end_ts > max(m.last_signal_ts, m.last_stat_ts):
                m.last_stat_ts = w.window_end_ts
                below = w.statistic < m.threshold * self.config.hysteresis_ratio
                m.quiet_windows = m.quiet_windows + 1 if below else 0
        events: list[IncidentEvent] = []
        for s in ordered:
            self.clock = max(self.clock, s.window_end_ts)
            if self.open is None:
                opened = self._maybe_open(s, model, version, now)
                if opened is not None:
                    events.append(opened)
            else:
                self._attach(s, model, version)
        if self.open is not None:
            ev = self._maybe_update(now) or self._maybe_resolve(now)
            if ev is not None:
                events.append(ev)
        if self.open is not None and (signals or events):
            self.changed.append(self.open)
        self.changed += [e.incident for e in events if e.kind == "resolved"]
        return events

    def supersede(self, new_version: int, now: datetime | None = None) -> list[IncidentEvent]:
        """Another version took over production: resolve the open incident (if any)."""
        if self.open is None:
            return []
        event = self._resolve("superseded", now or datetime.now(UTC), superseded_by=new_version)
        self.changed = [event.incident]
        return [event]

    # -- lifecycle -------------------------------------------------------------------------------

    def _maybe_open(self, s: DriftSignal, model: str, version: int, now: datetime) -> IncidentEvent | None:
        first = s
        if s.severity != "critical":
            horizon = s.window_end_ts - self.config.warning_window_seconds
            self._warnings = [(t, w) for t, w in self._warnings if t > horizon] + [(s.window_end_ts, s)]
            if len(self._warnings) < self.config.open_warnings:
                return None
            first = self._warnings[0][1]
        backlog = [w for _, w in self._warnings] if s.severity != "critical" else [s]
        self._warnings = []
        sid = _signal_id(first, model, version)
        self.open = DriftIncident(
            id=incident_id(model, version, sid),
            model=model,
            version=version,
            state="open",
            severity="warning",
            summary="",
            features=[],
            opened_at=now,
            first_window=_window(first),
            latest_window=_window(first),
        )
        self._members = {}
        for w in backlog:
            self._attach(w, model, version)
        self._changes, self._last_update_ts = [], self.clock
        return self._event("opened", now, [])

    def _attach(self, s: DriftSignal, model: str, version: int) -> None:
        inc = self.open
        assert inc is not None
        m = self._members.get((s.feature, s.detector))
        if m is None:
            windowed = s.detector not in CHANGE_POINT_DETECTORS
            self._members[(s.feature, s.detector)] = _Member(
                s.feature, s.window_end_ts, s.threshold, windowed
            )
        else:
            m.last_signal_ts, m.threshold = max(m.last_signal_ts, s.window_end_ts), s.threshold
            m.quiet_windows = 0
        old = inc.feature(s.feature)
        changes: list[str] = []
        if old is None:
            changes.append(f"feature {s.feature} ({s.detector})")
            ev = FeatureEvidence(
                feature=s.feature, detector=s.detector, statistic=s.statistic, threshold=s.threshold,
                effect_size=s.effect_size, p_value=s.p_value, severity=s.severity, detectors=[s.detector],
                signals=1, first_ts=s.window_end_ts, latest_ts=s.window_end_ts, message=s.message,
            )  # fmt: skip
        else:
            detectors = old.detectors
            if s.detector not in detectors:
                detectors = sorted([*detectors, s.detector])
                if not any(s.detector in f.detectors for f in inc.features):
                    changes.append(f"detector {s.detector} on {s.feature}")
            update: dict[str, Any] = {
                "detectors": detectors,
                "signals": old.signals + 1,
                "latest_ts": max(old.latest_ts, s.window_end_ts),
                "severity": s.severity if _RANK[s.severity] > _RANK[old.severity] else old.severity,
            }
            strength = s.statistic / s.threshold if s.threshold > 0 else s.statistic
            if strength > old.strength:
                update.update(
                    detector=s.detector, statistic=s.statistic, threshold=s.threshold,
                    effect_size=s.effect_size, p_value=s.p_value, message=s.message,
                )  # fmt: skip
            ev = old.model_copy(update=update)
        features = sorted(
            [*(f for f in inc.features if f.feature != s.feature), ev], key=lambda f: -f.strength
        )
        severity = inc.severity
        if _RANK[s.severity] > _RANK[severity]:
            severity = s.severity
            if inc.revision > 0 or inc.features:  # an opening's own severity is no change
                changes.append(f"escalated to {severity}")
        latest = _window(s) if s.window_end_ts >= inc.latest_window.end_ts else inc.latest_window
        ids = [*inc.alert_ids, _signal_id(s, model, version)][-_MAX_ALERT_IDS:]
        self.open = inc.model_copy(
            update={
                "features": features, "severity": severity, "latest_window": latest,
                "signals": inc.signals + 1, "alert_ids": ids,
                "summary": summarize(features, inc.first_window.start_ts),
            }
        )  # fmt: skip
        self._changes += [c for c in changes if c not in self._changes]

    def _maybe_update(self, now: datetime) -> IncidentEvent | None:
        if not self._changes:
            return None
        escalated = any(c.startswith("escalated") for c in self._changes)
        if not escalated and self.clock - self._last_update_ts < self.config.update_interval_seconds:
            return None
        changes, self._changes, self._last_update_ts = self._changes, [], self.clock
        return self._event("updated", now, changes)

    def _maybe_resolve(self, now: datetime) -> IncidentEvent | None:
        if all(self._quiet(m) for m in self._members.values()):
            return self._resolve("quiet", now)
        return None

    def _quiet(self, m: _Member) -> bool:
        if m.windowed:
            return m.quiet_windows >= self.config.resolve_windows
        if m.feature == ERROR_FEATURE:
            # The model itself got worse: its error rate stays up until another version serves,
            # and its detectors signal once per change, on labels that lag the events (whose
            # clock this is) - so silence proves nothing. Such an incident ends when superseded.
            return False
        return self.clock - m.last_signal_ts >= self.config.quiet_seconds

    def _resolve(
        self, how: Literal["quiet", "superseded"], now: datetime, superseded_by: int | None = None
    ) -> IncidentEvent:
        inc = self.open
        assert inc is not None
        self.open = inc.model_copy(
            update={
                "state": "resolved", "resolution": how, "superseded_by": superseded_by,
                "resolved_ts": self.clock if self.clock > float("-inf") else None,
            }
        )  # fmt: skip
        changes = (
            [f"superseded by version {superseded_by}"]
            if how == "superseded"
            else [f"quiet for {self.config.resolve_windows} windows"]
        )
        event = self._event("resolved", now, changes)
        self.open, self._members, self._changes = None, {}, []
        return event

    def _event(self, kind: IncidentKind, now: datetime, changes: list[str]) -> IncidentEvent:
        inc = self.open
        assert inc is not None
        if not inc.summary:
            inc = inc.model_copy(update={"summary": summarize(inc.features, inc.first_window.start_ts)})
        inc = inc.model_copy(update={"revision": inc.revision + 1})
        self.open = inc
        return IncidentEvent(
            id=f"{inc.id}:{inc.revision}",
            incident_id=inc.id,
            kind=kind,
            ts=now,
            model=inc.model,
            version=inc.version,
            severity=inc.severity,
            summary=inc.summary,
            changes=changes,
            incident=inc,
        )

    # -- checkpoint ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able state: config, the open incident and its members, pending warnings and changes."""
        return {
            "config": self.config.model_dump(),
            "open": None if self.open is None else self.open.model_dump(mode="json"),
            "clock": self.clock if self.clock > float("-inf") else None,
            "members": [
                [f, d, m.last_signal_ts, m.threshold, m.windowed, m.quiet_windows, _finite(m.last_stat_ts)]
                for (f, d), m in self._members.items()
            ],
            "warnings": [s.model_dump(mode="json") for _, s in self._warnings],
            "changes": list(self._changes),
            "last_update_ts": self._last_update_ts if self._last_update_ts > float("-inf") else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IncidentBook:
        book = cls(IncidentConfig.model_validate(state["config"]))
        if state.get("open") is not None:
            book.open = DriftIncident.model_validate(state["open"])
        clock = state.get("clock")
        book.clock = float("-inf") if clock is None else float(clock)
        for f, d, last, threshold, windowed, quiet, last_stat in state.get("members", []):
            book._members[(f, d)] = _Member(
                f,
                float(last), float(threshold), bool(windowed), int(quiet),
                float("-inf") if last_stat is None else float(last_stat),
            )  # fmt: skip
        warnings = [DriftSignal.model_validate(w) for w in state.get("warnings", [])]
        book._warnings = [(w.window_end_ts, w) for w in warnings]
        book._changes = list(state.get("changes", []))
        last = state.get("last_update_ts")
        book._last_update_ts = float("-inf") if last is None else float(last)
        return book
