"""The batch watchdog shared by the worker and the outcome joiner (stream.watchdog)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from stream.watchdog import EXIT_STUCK, Watchdog


def test_a_batch_longer_than_the_bound_is_reported_once_with_its_age() -> None:
    verdicts: list[tuple[float, float]] = []
    fired = threading.Event()
    stop = threading.Event()

    def on_stuck(elapsed: float, bound: float) -> None:
        verdicts.append((elapsed, bound))
        fired.set()

    dog = Watchdog(0.3, stop.is_set, on_stuck)
    dog.start()
    dog.begin()
    assert fired.wait(10)
    stop.set()
    (elapsed, bound), *rest = verdicts
    assert bound == 0.3 and elapsed > 0.3 and not rest


def test_batches_within_the_bound_and_idle_time_are_not_stuck() -> None:
    verdicts: list[float] = []
    stop = threading.Event()
    dog = Watchdog(0.5, stop.is_set, lambda elapsed, _b: verdicts.append(elapsed))
    dog.start()
    deadline = time.monotonic() + 1.5  # three bounds of short batches, then idle (not timed)
    while time.monotonic() < deadline:
        dog.begin()
        time.sleep(0.05)
        dog.end()
    time.sleep(1.0)
    stop.set()
    assert verdicts == []


def test_a_recovery_inside_a_timed_batch_keeps_the_batch_clock() -> None:
    dog = Watchdog(10, lambda: True, lambda _e, _b: None)
    dog.begin()
    started = dog.started
    dog.begin_if_idle()
    assert dog.started == started
    dog.end()
    dog.begin_if_idle()
    assert dog.started is not None and dog.started >= (started or 0)


def test_the_default_verdict_exits_with_status_75_and_one_line() -> None:
    code = (
        "import logging, time\n"
        "from stream.watchdog import Watchdog, exit_stuck\n"
        "logging.basicConfig()\n"
        "dog = Watchdog(0.2, lambda: False, exit_stuck('outcome joiner'))\n"
        "dog.start(); dog.begin(); time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_STUCK
    assert "stuck; exiting with status 75 so the supervisor restarts the outcome joiner" in done.stderr
