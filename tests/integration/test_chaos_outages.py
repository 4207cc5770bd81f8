"""Chaos: broker and Redis outages while the pipeline streams, on a private stack.

Each test streams `EVENTS` valid synthetic events (feature store `fraud` view and drift detectors
on), injects the fault mid-stream, and then checks that every event has a prediction (exactly one
under ``--exactly-once``, read_committed), that every entity's online ``count_24h`` equals its
number of events, and that the processes are alive and recovered by themselves.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.topics import Topics
from stream.watchdog import EXIT_STUCK
from tests.helpers import consume_all
from tests.integration.chaos_support import (
    EVENTS,
    BackgroundStream,
    assert_counts_exact,
    assert_scored,
    private_stack,
    spawn_cli,
)
from tests.integration.loop_support import RunningJoiner, spawn_retrainer, stop_process
from tests.integration.worker_support import RunningWorker, start_worker, wait_until
from tests.private_stack import PrivateStack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sample(w: RunningWorker, name: str, **labels: str) -> float | None:
    return w.worker.metrics.registry.get_sample_value(name, labels)


def _consumed(w: RunningWorker) -> float:
    return _sample(w, "driftline_events_consumed_total") or 0.0


def _watch_stuck(w: RunningWorker) -> list[float]:
    """Record the watchdog's verdicts instead of exiting the test process."""
    stuck: list[float] = []
    w.worker.watchdog.on_stuck = lambda elapsed, _bound: stuck.append(elapsed)
    return stuck


def _assert_outcomes(s: Any, served: Any, log: Path | None = None) -> None:
    """The joiner joined every event's served prediction to its label (ids de-duplicate)."""
    outcomes = consume_all(s, Topics(s.topic_prefix).outcomes, len(served), timeout=120)
    joined = {r.json()["event_id"] for r in outcomes if r.json()["served"]}
    why = f"{len(set(served) - joined)} events without an outcome"
    assert joined == set(served), why + (f"; the joiner's log:\n{_log_tail(log)}" if log else "")


def test_worker_pauses_while_redis_is_unreachable_for_30s(tmp_path: Path) -> None:
    with private_stack(tmp_path) as ps:
        s = ps.settings
        w = start_worker(s)
        stuck = _watch_stuck(w)
        stream = BackgroundStream(s)
        wait_until(lambda: _consumed(w) > 3000, timeout=120)
        assert _sample(w, "driftline_dependency_up", dependency="redis") == 1

        ps.stop_redis()
        wait_until(lambda: _sample(w, "driftline_dependency_up", dependency="redis") == 0, timeout=60)
        completed = _sample(w, "driftline_last_batch_completed_timestamp")
        time.sleep(30)  # the outage itself, not a wait for a result
        assert w.thread.is_alive() and not w.errors, w.errors
        assert _sample(w, "driftline_dependency_up", dependency="redis") == 0
        # Paused: no batch was committed while Redis was away.
        assert _sample(w, "driftline_last_batch_completed_timestamp") == completed
        assert (_sample(w, "driftline_outage_waits_total", dependency="redis") or 0) >= 1

        ps.start_redis()
        wait_until(lambda: _sample(w, "driftline_dependency_up", dependency="redis") == 1, timeout=120)
        stream.join()
        served = assert_scored(s, EVENTS, exactly_once=False)
        assert_counts_exact(s, served)
        assert w.thread.is_alive() and not stuck
        w.stop()


def _restart_while_streaming(
    ps: PrivateStack, dependency: str, tmp_path: Path, exactly_once: bool = False, retrainer: bool = False
) -> None:
    """A worker (a thread), a joiner and optionally a retrainer (a process) stream while
    `dependency` is stopped mid-stream and started again; then every check of the module docstring.

    Through a broker restart the joiner runs supervised (`driftline outcomes`, restarted when it
    exits): librdkafka's ``send_offsets_to_transaction`` can block past its timeout once the group
    coordinator went away (confluentinc/librdkafka#5456), and only its watchdog's exit (status 75)
    and a restart get it out. Through a Redis restart it recovers in-process (a thread)."""
    s = ps.settings
    stop, start = (
        (ps.stop_redis, ps.start_redis) if dependency == "redis" else (ps.stop_kafka, ps.start_kafka)
    )
    log = tmp_path / "retrainer.log"
    w = start_worker(s, exactly_once=exactly_once)
    stuck = _watch_stuck(w)
    joiner_log = tmp_path / "joiner.log" if dependency == "kafka" else None
    joiner = Supervisor(ps, joiner_log, JOINER) if joiner_log else RunningJoiner(s)
    trainer = spawn_retrainer(s, log) if retrainer else None
    up = lambda: _sample(w, "driftline_dependency_up", dependency=dependency)  # noqa: E731
    try:
        stream = BackgroundStream(s)
        wait_until(lambda: _consumed(w) > 5000, timeout=120)
        stop()
        wait_until(lambda: up() == 0, timeout=60)
        start()
        stream.join()
        served = assert_scored(s, EVENTS, exactly_once=exactly_once)
        assert_counts_exact(s, served)
        _assert_outcomes(s, served, joiner_log)
        assert w.thread.is_alive() and joiner.alive() and not stuck
        wait_until(lambda: up() == 1, timeout=60)
        if trainer is not None:
            assert trainer.poll() is None, log.read_text()[-3000:]
    finally:
        if trainer is not None:
            stop_process(trainer)
        joiner.stop()
        w.stop()


def test_redis_restart_under_worker_joiner_and_retrainer(tmp_path: Path) -> None:
    with private_stack(tmp_path) as ps:
        _restart_while_streaming(ps, "redis", tmp_path, retrainer=True)


def test_broker_restart_under_worker_and_joiner_at_least_once(tmp_path: Path) -> None:
    with private_stack(tmp_path) as ps:
        _restart_while_streaming(ps, "kafka", tmp_path)


def test_broker_restart_under_worker_and_joiner_exactly_once(tmp_path: Path) -> None:
    """The worker (`driftline worker --exactly-once`) and the joiner (`driftline outcomes`) as
    supervised processes: their watchdogs may exit them with status 75, as in production."""
    with private_stack(tmp_path) as ps:
        s = ps.settings
        log, joiner_log = tmp_path / "worker.log", tmp_path / "joiner.log"
        sup = Supervisor(ps, log)
        joiner = Supervisor(ps, joiner_log, JOINER)
        try:
            stream = BackgroundStream(s)
            wait_until(lambda: (sup.metric("driftline_events_consumed_total") or 0) > 5000, timeout=180)
            ps.stop_kafka()
            ps.start_kafka()
            stream.join()
            served = assert_scored(s, EVENTS, exactly_once=True)
            assert_counts_exact(s, served)
            _assert_outcomes(s, served, joiner_log)
            assert sup.alive(), (sup.exits, _log_tail(log))
            assert joiner.alive(), (joiner.exits, _log_tail(joiner_log))
            wait_until(lambda: sup.metric("driftline_dependency_up", dependency="kafka") == 1, timeout=60)
        finally:
            joiner.stop()
            sup.stop()


def _log_tail(log: Path) -> str:
    """The end of a worker's (or joiner's) log without librdkafka's own lines."""
    return "\n".join(line for line in log.read_text().splitlines() if not line.startswith("%"))[-4000:]


# ---- two broker restarts under --exactly-once, the worker a supervised process ------------------

DEADLINE = 20.0  # the worker's batch_deadline_seconds in this test
RESUME_BOUND = DEADLINE + 60  # README "Failure modes": scoring resumes within deadline + 60 s


WORKER = ("worker", "--exactly-once", "--worker-id", "w1")  # a stable id: a restart fences at once
JOINER = ("outcomes",)  # always transactional, with a stable transactional.id


class Supervisor:
    """Runs `driftline ARGS` (the exactly-once worker by default) and restarts it whenever it
    exits (as systemd or Kubernetes would); records the exit statuses."""

    def __init__(self, ps: PrivateStack, log: Path, args: tuple[str, ...] = WORKER) -> None:
        self.s = ps.settings.model_copy(update={"batch_deadline_seconds": DEADLINE})
        self.log, self.port, self.args = log, free_port(), args
        self.exits: list[int] = []
        self._stop = threading.Event()
        self.proc = self._spawn()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _spawn(self) -> Any:
        return spawn_cli(self.s, self.log, *self.args, "--metrics-port", str(self.port))

    def alive(self) -> bool:
        """Running, and every exit so far was the watchdog's (status 75), never a crash."""
        return self.proc.poll() is None and all(rc == EXIT_STUCK for rc in self.exits)

    def _run(self) -> None:
        while not self._stop.is_set():
            rc = self.proc.poll()
            if rc is not None and not self._stop.is_set():
                self.exits.append(rc)
                self.proc = self._spawn()
            time.sleep(0.2)

    def metric(self, name: str, **labels: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None  # restarting
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        stop_process(self.proc)


def test_two_broker_restarts_exactly_once_resume_within_bound(tmp_path: Path) -> None:
    with private_stack(tmp_path) as ps:
        s = ps.settings
        log = tmp_path / "worker.log"
        sup = Supervisor(ps, log)
        try:
            stream = BackgroundStream(s, rate=700)
            wait_until(lambda: (sup.metric("driftline_events_consumed_total") or 0) > 3000, timeout=180)
            ps.stop_kafka()
            ps.start_kafka()
            time.sleep(15)  # the second restart 15 s after the first, as in the report
            ps.stop_kafka()
            ps.start_kafka()
            back = time.time()

            def scoring_again() -> bool:
                return (sup.metric("driftline_last_batch_completed_timestamp") or 0) > back

            try:
                wait_until(scoring_again, timeout=RESUME_BOUND)
            except AssertionError:
                why = f"no batch within {RESUME_BOUND} s, exits {sup.exits}:\n{_log_tail(log)}"
                raise AssertionError(why) from None
            stream.join()
            served = assert_scored(s, EVENTS, exactly_once=True)
            assert_counts_exact(s, served)
            assert sup.proc.poll() is None, log.read_text()[-3000:]
            # Any exit was the watchdog's (status 75 + its line), never a crash.
            assert all(rc == EXIT_STUCK for rc in sup.exits), (sup.exits, log.read_text()[-3000:])
        finally:
            sup.stop()
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        # One line per state change (a reconnect may flap once or twice), never one per retry.
        assert text.count("kafka at ") <= 12 * (1 + len(sup.exits)), _log_tail(log)


def _freeze_broker_until_exit(ps: PrivateStack, sup: Supervisor, progress: str) -> None:
    """SIGSTOP the broker (connections stay open, nothing answers) until `sup`'s process exits.
    Its `progress` counter must still be short of the stream when the broker froze: work was in
    flight (a process that had caught up would just wait for the broker, correctly)."""
    pid = ps.stack.kafka_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        done = sup.metric(progress) or 0
        assert done < EVENTS, f"{progress} {done}: finished before the broker froze, nothing in flight"
        wait_until(lambda: bool(sup.exits), timeout=DEADLINE + 60)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_watchdog_exits_a_worker_whose_batch_is_stuck(tmp_path: Path) -> None:
    """A broker frozen (SIGSTOP: connections open, no answers) in the middle of exactly-once
    batches: the batch cannot finish; the watchdog exits the worker with status 75, and the
    restarted worker scores every event exactly once after the broker thaws."""
    with private_stack(tmp_path) as ps:
        s = ps.settings
        log = tmp_path / "worker.log"
        # The whole stream is in the topic before the worker starts, so when the broker freezes
        # the worker still has fetched events queued locally: it is inside a batch whose
        # transaction cannot finish (a worker that had caught up would just wait, correctly).
        BackgroundStream(s, rate=0).join()
        sup = Supervisor(ps, log)
        try:
            wait_until(lambda: (sup.metric("driftline_events_consumed_total") or 0) > 1000, timeout=180)
            _freeze_broker_until_exit(ps, sup, "driftline_events_consumed_total")
            assert sup.exits == [EXIT_STUCK], sup.exits
            assert "stuck; exiting with status 75" in log.read_text()
            served = assert_scored(s, EVENTS, exactly_once=True)
            assert_counts_exact(s, served)
            assert sup.proc.poll() is None
        finally:
            sup.stop()


def test_watchdog_exits_a_joiner_whose_batch_is_stuck(tmp_path: Path) -> None:
    """The same frozen broker under `driftline outcomes` (supervised, as the worker): its batch
    cannot commit; its watchdog exits it with status 75, and the restarted joiner joins every
    event's prediction to its label after the broker thaws."""
    with private_stack(tmp_path) as ps:
        s = ps.settings
        log, joiner_log = tmp_path / "worker.log", tmp_path / "joiner.log"
        # Events, labels and every prediction are in their topics before the joiner starts, so
        # when the broker freezes the joiner has fetched work queued: a batch in flight.
        BackgroundStream(s, rate=0).join()
        sup = Supervisor(ps, log)
        joiner: Supervisor | None = None
        try:
            assert_scored(s, EVENTS, exactly_once=True)
            joiner = Supervisor(ps, joiner_log, JOINER)
            wait_until(lambda: (joiner.metric("driftline_outcomes_total") or 0) > 1000, timeout=180)
            _freeze_broker_until_exit(ps, joiner, "driftline_outcomes_total")
            assert joiner.exits == [EXIT_STUCK], (joiner.exits, _log_tail(joiner_log))
            assert "stuck; exiting with status 75 so the supervisor restarts the outcome joiner" in (
                joiner_log.read_text()
            )
            served = assert_scored(s, EVENTS, exactly_once=True)
            _assert_outcomes(s, served, joiner_log)
            assert sup.alive(), (sup.exits, _log_tail(log))
            assert joiner.alive(), (joiner.exits, _log_tail(joiner_log))
        finally:
            if joiner is not None:
                joiner.stop()
            sup.stop()
