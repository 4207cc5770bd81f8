"""The demo's second act: outcomes, the retrainer, a canary and its automatic decision.

`LoopProcesses` starts the outcome joiner (a thread here) and the Faust retrainer (its own
process, as in production); `follow_loop` prints each step the retrainer and the registry publish
on ``<prefix>.models`` and, once a canary runs, sends it more traffic so that it earns the
labeled outcomes its promote-or-roll-back decision needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from rich.console import Console

from driftline.loop import build_joiner
from driftline.settings import Settings

# Fast enough for a few minutes of demo: short cooldown, a big canary, a small training window.
DEMO_LOOP_SETTINGS: dict[str, Any] = {
    "retrain_cooldown_seconds": 60.0,
    "canary_fraction": 0.5,
    "rollout_min_outcomes": 300,
    "retrain_recent_rows": 8000,
    "retrain_min_rows": 2000,
}


def settings_env(s: Settings) -> dict[str, str]:
    """``s`` as DRIFTLINE_* variables, for a child process to see the same settings."""
    env: dict[str, str] = {}
    for name, value in s.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"DRIFTLINE_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


class LoopProcesses:
    """The outcome joiner (thread) and the retrainer (child process) of the demo."""

    def __init__(self, s: Settings, log_path: Path) -> None:
        self.joiner = build_joiner(s)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._join, daemon=True)
        self.thread.start()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("a") as log:
            self.retrainer = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from driftline.cli import main; main()",
                    "retrainer",
                    "--log-level",
                    "info",
                    "--metrics-port",
                    "0",
                ],
                env={**os.environ, **settings_env(s)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _join(self) -> None:
        try:
            self.joiner.run()
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        self.retrainer.terminate()
        try:
            self.retrainer.wait(30)
        except subprocess.TimeoutExpired:
            self.retrainer.kill()
        self.joiner.stop()
        self.thread.join(30)


def describe(event: dict[str, Any]) -> str | None:
    """One line for a step on ``<prefix>.models`` (None: not worth a line)."""
    kind, name = event.get("kind"), event.get("name")
    ref = f"{name}:{event.get('version')}"
    if kind == "retrain_started":
        return f"[bold]retrain started[/bold] for {name}: {event['reason']}"
    if kind in ("retrain_finished", "retrain_failed"):
        return f"[bold]{kind.replace('_', ' ')}[/bold]: {event['reason']}"
    if kind == "registered":
        return f"registered {ref} (stage {event.get('stage')})"
    if kind == "canary_started":
        return f"[bold]canary[/bold] {ref} serves {100 * (event.get('fraction') or 0):.0f}% of entities"
    if kind == "rollout_decided":
        action = event["detail"].get("action")
        color = "green" if action == "promote" else "red"
        return f"[bold {color}]rollout decision: {action}[/bold {color}] - {event['reason']}"
    if kind in ("promoted", "rolled_back"):
        return f"{kind.replace('_', ' ')}: {ref} is now {event.get('stage')}"
    return None


def follow_loop(
    consumer: Consumer,
    console: Console,
    more_traffic: Callable[[], None],
    alive: Callable[[], bool],
    timeout: float = 180.0,
) -> list[dict[str, Any]]:
    """Print the loop's steps until a rollout decision (or no candidate, or ``timeout``)."""
    steps: list[dict[str, Any]] = []
    sent_more = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive() and not _finished(steps):
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is not None or not msg.value():
                continue
            event = orjson.loads(msg.value() or b"{}")
            steps.append(event)
            line = describe(event)  # retrain_skipped: one per further alert, not printed
            if line:
                console.print(line, highlight=False)
            if event.get("kind") == "canary_started" and not sent_more:
                console.print(
                    "[dim]sending more drifted traffic, so the canary earns labeled outcomes ...[/dim]"
                )
                threading.Thread(target=more_traffic, daemon=True).start()
                sent_more = True
    skipped = sum(e.get("kind") == "retrain_skipped" for e in steps)
    if skipped:
        console.print(f"[dim]{skipped} further retrain triggers skipped (job running, or cooldown)[/dim]")
    return steps


def _finished(steps: list[dict[str, Any]]) -> bool:
    """A rollout decision, a failed job, or a job that registered no candidate ends the act."""
    for step in steps:
        kind = step.get("kind")
        registered = step.get("detail", {}).get("result", {}).get("registered")
        if kind in ("rollout_decided", "retrain_failed") or (kind == "retrain_finished" and not registered):
            return True
    return False
