"""When to retrain: triggers in, one decision out, with the per-model state it needs.

A `RetrainTrigger` is a critical drift incident (`incident_trigger`: its opening or its
escalation), a warning, a live accuracy drop, or a user's request. `RetrainPolicy.decide` starts a
job on a critical trigger, on ``warnings_needed`` warnings within ``warnings_window_seconds``, on an
accuracy drop and on request, but never while a job of the same model runs, never twice for one
incident (the last ``MAX_INCIDENTS`` incident ids are remembered; the retrainer retries one whose
job produced no candidate, `should_retry`, or whose candidate was rolled back,
`retry_after_rollback`: at most ``MAX_INCIDENT_ATTEMPTS`` jobs in all), and
(except on request) not within ``cooldown_seconds`` of the last start.
The state is a small JSON-able model, so the retrainer keeps it in a changelog-backed table and
a restart keeps the cooldown. A job marked running by another retrainer instance (it died
mid-job) does not block.

>>> policy = RetrainPolicy(cooldown_seconds=600)
>>> state = RetrainState()
>>> alert = RetrainTrigger(model="fraud", kind="critical", reason="error rate 0.1 -> 0.4", ts=1000.0)
>>> start, why, state = policy.decide(state, alert, owner="r1")
>>> start, state.running_owner
(True, 'r1')
>>> policy.decide(state, alert.model_copy(update={"ts": 1001.0}), owner="r1")[:2]
(False, 'a retrain of fraud is already running (started 1 s ago)')
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.incidents import IncidentEvent

TriggerKind = Literal["critical", "warning", "accuracy", "manual"]
MAX_INCIDENTS = 100
MAX_INCIDENT_ATTEMPTS = 3


def should_retry(trigger: RetrainTrigger, registered: bool) -> RetrainTrigger | None:
    """The retry of an incident's job that registered no candidate (None: no retry).

    A job started at a change's onset trains on rows mostly from before it and may find no better
    model; the incident stays open and sends no new opening, so it is retried - after the
    cooldown, while it is open and its version serves (the retrainer checks) - up to
    `MAX_INCIDENT_ATTEMPTS` jobs.

    >>> t = RetrainTrigger(model="fraud", kind="critical", reason="r", ts=0.0, incident_id="i", version=1)
    >>> should_retry(t, registered=False).attempt, should_retry(t, registered=True)
    (2, None)
    """
    return None if registered else _next_attempt(trigger)


def retry_after_rollback(trigger: RetrainTrigger) -> RetrainTrigger | None:
    """The retry of an incident whose job's candidate was rolled back (None: no retry).

    The incident stays open (the version it is about still serves, and a worse model stays worse),
    but its one job is spent: without a retry the change would be left with no better model.
    The retry trains on a later window, mostly after the change. Same bound and checks as
    `should_retry`.

    >>> t = RetrainTrigger(model="fraud", kind="critical", reason="r", ts=0.0, incident_id="i", version=1)
    >>> retry_after_rollback(t).attempt, retry_after_rollback(t.model_copy(update={"attempt": 3}))
    (2, None)
    """
    return _next_attempt(trigger)


def _next_attempt(trigger: RetrainTrigger) -> RetrainTrigger | None:
    if trigger.incident_id is None or trigger.attempt >= MAX_INCIDENT_ATTEMPTS:
        return None
    return trigger.model_copy(update={"attempt": trigger.attempt + 1})


class RetrainTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    kind: TriggerKind
    reason: str
    ts: float  # wall clock, epoch seconds
    alert_id: str | None = None
    incident_id: str | None = None
    version: int | None = None
    """The model version the incident is about (None: not an incident's trigger)."""
    attempt: int = Field(1, ge=1)
    """1 for the incident's opening; more for a retry (no candidate, or it was rolled back)."""


def incident_trigger(event: IncidentEvent, now: float) -> RetrainTrigger | None:
    """The trigger an incident event makes: a critical incident opening, or escalating to critical.

    >>> from detectors.incidents import IncidentBook
    >>> from detectors.signals import DriftSignal
    >>> s = DriftSignal(detector="psi", feature="amount", statistic=0.4, threshold=0.2, severity="critical",
    ...                 window_start_ts=0, window_end_ts=300, window_start_index=0, window_end_index=9,
    ...                 n_window=9, n_reference=9, message="amount: PSI 0.4 >= 0.2")
    >>> [opened] = IncidentBook().observe([s], model="fraud", version=1)
    >>> incident_trigger(opened, 0.0).incident_id == opened.incident_id
    True
    """
    escalated = event.kind == "updated" and "escalated to critical" in event.changes
    if event.severity != "critical" or not (event.kind == "opened" or escalated):
        return None
    return RetrainTrigger(
        model=event.model,
        kind="critical",
        reason=f"incident {event.incident_id}: {event.summary}",
        ts=now,
        incident_id=event.incident_id,
        version=event.version,
    )


class RetrainState(BaseModel):
    """Per model: the running job, the last start and recent warnings."""

    model_config = ConfigDict(extra="forbid")

    running_owner: str | None = None
    running_since: float | None = None
    last_started: float | None = None
    last_finished: float | None = None
    warnings: list[float] = Field(default_factory=list)
    jobs: int = 0
    incidents: list[str] = Field(default_factory=list)
    """The incidents a job was started for (the last `MAX_INCIDENTS`)."""
    trial_version: int | None = None
    """The candidate the last job registered, and the trigger that started that job: a rollback
    of that version retries the trigger's incident (`retry_after_rollback`)."""
    trial_trigger: RetrainTrigger | None = None


class RetrainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown_seconds: float = Field(1800.0, ge=0)
    warnings_needed: int = Field(3, ge=1)
    warnings_window_seconds: float = Field(3600.0, gt=0)

    def decide(
        self, state: RetrainState, trigger: RetrainTrigger, owner: str
    ) -> tuple[bool, str, RetrainState]:
        """(start a job?, why, the new state). ``owner``: this retrainer instance's id."""
        s = state.model_copy(deep=True)
        now = trigger.ts
        if trigger.incident_id is not None and trigger.incident_id in s.incidents and trigger.attempt == 1:
            return False, f"a retrain was already started for incident {trigger.incident_id}", s
        if s.running_owner is not None:
            if s.running_owner == owner:
                since = now - (s.running_since or now)
                return (
                    False,
                    f"a retrain of {trigger.model} is already running (started {since:.0f} s ago)",
                    s,
                )
            s.running_owner = s.running_since = None  # its retrainer died mid-job
        if trigger.kind == "warning":
            s.warnings = [t for t in s.warnings if now - t < self.warnings_window_seconds] + [now]
            if len(s.warnings) < self.warnings_needed:
                return False, f"warning {len(s.warnings)} of {self.warnings_needed} needed", s
        if trigger.kind != "manual" and s.last_started is not None:
            left = self.cooldown_seconds - (now - s.last_started)
            if left > 0:
                ago = now - s.last_started
                return False, f"{trigger.model} was retrained {ago:.0f} s ago (cooldown {left:.0f} s left)", s
        s.running_owner, s.running_since, s.last_started = owner, now, now
        s.warnings = []
        s.jobs += 1
        if trigger.incident_id is not None:
            s.incidents = [*s.incidents, trigger.incident_id][-MAX_INCIDENTS:]
        return True, f"{trigger.kind}: {trigger.reason}", s

    @staticmethod
    def finished(state: RetrainState, now: float) -> RetrainState:
        s = state.model_copy(deep=True)
        s.running_owner = s.running_since = None
        s.last_finished = now
        return s
