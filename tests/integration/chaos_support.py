"""Helpers for the chaos tests: a private stack with topics and a model, a stream produced in the
background while a fault is injected, and the checks every chaos test ends with."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient

from driftline.demo import settings_env
from driftline.settings import Settings
from driftline.wiring import feature_view, online_store
from stream.topics import Topics, create_topics
from tests.integration.worker_support import predictions, produce_events, register
from tests.private_stack import PrivateStack

EVENTS = 20_000
ENTITIES = 500


@contextmanager
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    """A private broker + Redis with this test's topics and a production fraud model."""
    with PrivateStack(tmp_path) as ps:
        create_topics(AdminClient(ps.settings.kafka_client_config()), Topics(ps.settings.topic_prefix), 6)
        register(ps.settings)
        yield ps


class BackgroundStream:
    """`EVENTS` valid synthetic events produced at `rate` per second in a thread (the test's
    producer rides out the same faults: librdkafka retries until its delivery timeout)."""

    def __init__(self, s: Settings, rate: float = 1000, n: int = EVENTS, seed: int = 7) -> None:
        self.n = n
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(s, n, rate, seed), daemon=True)
        self.thread.start()

    def _run(self, s: Settings, n: int, rate: float, seed: int) -> None:
        try:
            produce_events(s, n, seed=seed, entities=ENTITIES, rate=rate)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float = 300) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the producer did not finish"
        assert not self.errors, self.errors


def assert_scored(s: Settings, n: int, exactly_once: bool, timeout: float = 240) -> Counter[str]:
    """Every valid event has a served prediction: at least one, or exactly one (read_committed)."""
    preds = predictions(s, n, timeout=timeout)
    served = Counter(str(p["event_id"]) for p in preds if p["served"])
    assert len(served) == n, f"{len(served)} of {n} events have a prediction"
    if exactly_once:
        repeated = {e: c for e, c in served.items() if c > 1}
        assert not repeated, f"{len(repeated)} events scored more than once, e.g. {list(repeated)[:3]}"
    return served


def assert_counts_exact(s: Settings, served: Counter[str]) -> None:
    """For every entity, the online ``count_24h`` equals its number of valid events (the whole
    stream spans a few hours of event time, so all of them are in the 24 h window)."""
    preds = predictions(s, len(served), timeout=60)
    events_of: dict[str, set[str]] = {}
    for p in preds:
        events_of.setdefault(str(p["entity_id"]), set()).add(str(p["event_id"]))
    view = feature_view(s)
    assert view is not None
    store = online_store(s, view)
    wrong = {}
    for entity, ids in events_of.items():
        found = store.describe(entity)
        count = None if found is None else found.values.get("count_24h")
        if count != len(ids):
            wrong[entity] = (count, len(ids))
    sample = list(wrong.items())[:5]
    assert not wrong, f"{len(wrong)} entities with a wrong count_24h (stored, events): {sample}"


def spawn_cli(s: Settings, log: Path, *args: str) -> subprocess.Popen[str]:
    """`driftline ARGS` with exactly `s`, its output appended to `log`."""
    with log.open("a") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-c", "from driftline.cli import main; main()", *args],
            env={**os.environ, **settings_env(s)},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
