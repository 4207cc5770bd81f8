"""Helpers for tests of the loop after scoring: the outcome joiner in a thread, the Faust
retrainer in its own process (as users run it), and reading the models topic."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from driftline.demo import settings_env
from driftline.loop import build_joiner
from driftline.settings import Settings
from stream.outcomes import OutcomeJoiner
from stream.topics import Topics
from tests.helpers import consume_all
from tests.integration.worker_support import start_worker

CLI = [sys.executable, "-c", "from driftline.cli import main; main()"]


def spawn_retrainer(s: Settings, log: Path, script: Path | None = None) -> subprocess.Popen[str]:
    """`driftline retrainer` with exactly `s` (every setting passed as DRIFTLINE_* variables);
    ``script``: a file run instead of the CLI module, with the same arguments (a fault injected)."""
    program = [str(script)] if script else ["-c", "from driftline.cli import main; main()"]
    with log.open("a") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, *program, "retrainer", "--log-level", "info", "--metrics-port", "0"],
            env={**os.environ, **settings_env(s)},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def stop_process(p: subprocess.Popen[str]) -> None:
    p.terminate()
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


class RunningJoiner:
    def __init__(self, s: Settings) -> None:
        self.joiner: OutcomeJoiner = build_joiner(s)
        self.errors: list[BaseException] = []
        # The watchdog's verdicts (seconds a batch ran), recorded instead of exiting the tests.
        self.stuck: list[float] = []
        self.joiner.watchdog.on_stuck = lambda elapsed, _bound: self.stuck.append(elapsed)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.joiner.run()
        except BaseException as exc:
            self.errors.append(exc)

    def alive(self) -> bool:
        """Running, with no error and no stuck batch."""
        return self.thread.is_alive() and not self.errors and not self.stuck

    def stop(self) -> None:
        self.joiner.stop()
        self.thread.join(30)
        assert not self.errors, self.errors
        assert not self.stuck, f"the joiner's watchdog found a batch stuck for {self.stuck} s"


def model_steps(s: Settings, expected: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    """Everything on <prefix>.models: registry lifecycle events and the retrainer's steps."""
    return [r.json() for r in consume_all(s, Topics(s.topic_prefix).models, expected, timeout)]


@contextmanager
def running_loop(
    s: Settings, log: Path, worker_settings: Settings | None = None, joiner_settings: Settings | None = None
) -> Iterator[RunningJoiner]:
    """A worker and an outcome joiner (threads) and a retrainer (process), stopped on exit; the
    retrainer's log is printed when the body fails an assertion. The worker and the joiner may
    run with settings of their own (another user on a secured stack)."""
    worker = start_worker(worker_settings or s)
    joiner = RunningJoiner(joiner_settings or s)
    retrainer = spawn_retrainer(s, log)
    try:
        yield joiner
    except AssertionError:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop_process(retrainer)
        joiner.stop()
        worker.stop()
