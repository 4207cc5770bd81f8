from __future__ import annotations

from inference.retrain_policy import RetrainPolicy, RetrainState, RetrainTrigger


def trig(kind: str, ts: float) -> RetrainTrigger:
    return RetrainTrigger.model_validate({"model": "fraud", "kind": kind, "reason": "r", "ts": ts})


def test_critical_starts_then_cooldown_holds_even_after_a_restore() -> None:
    policy = RetrainPolicy(cooldown_seconds=600)
    start, _, state = policy.decide(RetrainState(), trig("critical", 1000), owner="a")
    assert start and state.jobs == 1
    state = RetrainPolicy.finished(state, 1010)
    restored = RetrainState.model_validate(state.model_dump())  # what the Faust table gives back
    start, why, restored = policy.decide(restored, trig("critical", 1500), owner="b")
    assert not start and "cooldown" in why
    start, _, restored = policy.decide(restored, trig("critical", 1601), owner="b")
    assert start and restored.jobs == 2


def test_warnings_need_k_within_the_window() -> None:
    policy = RetrainPolicy(warnings_needed=3, warnings_window_seconds=100, cooldown_seconds=0)
    state = RetrainState()
    decisions = []
    for ts in (0, 50, 160, 170, 180):  # the first two expire before the third arrives
        start, _, state = policy.decide(state, trig("warning", ts), owner="a")
        decisions.append(start)
    assert decisions == [False, False, False, False, True]
    assert state.warnings == []


def test_one_job_at_a_time_but_a_dead_owner_does_not_block() -> None:
    policy = RetrainPolicy(cooldown_seconds=0)
    _, _, state = policy.decide(RetrainState(), trig("manual", 0), owner="a")
    start, why, state = policy.decide(state, trig("manual", 5), owner="a")
    assert not start and "already running" in why
    start, _, state = policy.decide(state, trig("manual", 6), owner="b")  # "a" restarted as "b"
    assert start and state.running_owner == "b"


def test_manual_requests_skip_the_cooldown() -> None:
    policy = RetrainPolicy(cooldown_seconds=3600)
    _, _, state = policy.decide(RetrainState(), trig("critical", 0), owner="a")
    state = RetrainPolicy.finished(state, 1)
    assert not policy.decide(state, trig("critical", 10), owner="a")[0]
    assert policy.decide(state, trig("manual", 10), owner="a")[0]


def test_one_job_per_incident_unless_it_produced_no_candidate() -> None:
    from inference.retrain_policy import MAX_INCIDENT_ATTEMPTS, should_retry

    policy = RetrainPolicy(cooldown_seconds=10)
    t = RetrainTrigger(model="m", kind="critical", reason="r", ts=0.0, incident_id="inc", version=1)
    start, _, state = policy.decide(RetrainState(), t, owner="a")
    assert start and state.incidents == ["inc"]
    state = RetrainPolicy.finished(state, 5.0)
    redelivered = t.model_copy(update={"ts": 100.0})
    start, why, _ = policy.decide(state, redelivered, owner="a")
    assert not start and "already started for incident inc" in why
    assert should_retry(t, registered=True) is None  # a candidate came of it: that was the job
    retry = should_retry(t, registered=False)
    assert retry is not None and retry.attempt == 2 and retry.incident_id == "inc"
    start, _, state = policy.decide(state, retry.model_copy(update={"ts": 100.0}), owner="a")
    assert start and state.jobs == 2
    last = t.model_copy(update={"attempt": MAX_INCIDENT_ATTEMPTS})
    assert should_retry(last, registered=False) is None  # bounded


def test_a_rolled_back_candidate_releases_its_incident_for_one_more_job() -> None:
    from inference.retrain_policy import MAX_INCIDENT_ATTEMPTS, retry_after_rollback

    t = RetrainTrigger(model="m", kind="critical", reason="r", ts=0.0, incident_id="inc", version=1)
    retry = retry_after_rollback(t)
    assert retry is not None and (retry.attempt, retry.incident_id) == (2, "inc")
    policy = RetrainPolicy(cooldown_seconds=10)
    _, _, state = policy.decide(RetrainState(), t, owner="a")
    state = RetrainPolicy.finished(state, 5.0)
    assert policy.decide(state, retry.model_copy(update={"ts": 100.0}), owner="a")[0]
    assert retry_after_rollback(t.model_copy(update={"attempt": MAX_INCIDENT_ATTEMPTS})) is None
    manual = RetrainTrigger(model="m", kind="manual", reason="r", ts=0.0)
    assert retry_after_rollback(manual) is None  # no incident: nothing to retry
    # The state remembers the trial's trigger (a JSON round trip, as the changelog table keeps it).
    state.trial_version, state.trial_trigger = 2, t
    assert RetrainState.model_validate_json(state.model_dump_json()).trial_trigger == t
