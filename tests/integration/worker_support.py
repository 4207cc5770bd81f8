"""Helpers for worker tests: a trained model in the registry, workers in threads, reading outputs."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Consumer
from rich.console import Console

from driftline.produce import produce_generated
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import build_worker, model_registry
from inference.metadata import ModelVersion
from inference.registry import ModelRegistry
from inference.training import TrainedModel, register_trained, train_model
from stream.producer import EventProducer
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from stream.worker import Worker, WorkerConfig
from tests.helpers import Record, committed_of, committed_total, consume_all, topic_size

_TRAINED: dict[int, TrainedModel] = {}


def trained(seed: int = 0) -> TrainedModel:
    """A small logistic-regression fraud model (cached per test session)."""
    if seed not in _TRAINED:
        data = synthetic_training_set(4000, seed)
        _TRAINED[seed] = train_model(data.numeric, data.categorical, data.labels, data.ts, seed=seed)
    return _TRAINED[seed]


def register(
    s: Settings, stage: Literal["candidate", "production"] = "production", seed: int = 0, name: str = "fraud"
) -> ModelVersion:
    return register_trained(model_registry(s), name, trained(seed), stage)


def registry(s: Settings) -> ModelRegistry:
    return model_registry(s)


def produce_events(
    s: Settings, n: int, seed: int = 1, entities: int = 1000, rate: float = 0, start_ts: float = 1.7e9
) -> None:
    tally = produce_generated(
        s,
        n,
        rate,
        seed,
        entities,
        DriftSchedule(),
        label_delay=10,
        start_ts=start_ts,
        console=Console(quiet=True),
    )
    assert tally.failed == 0 and tally.delivered == tally.sent


def produce_raw(s: Settings, values: list[tuple[str, bytes]]) -> None:
    producer = EventProducer(s.kafka_client_config())
    for key, value in values:
        producer.send(Topics(s.topic_prefix).events, key, value)
    assert producer.flush().delivered == len(values)


@dataclass
class RunningWorker:
    worker: Worker
    thread: threading.Thread
    errors: list[BaseException]

    def stop(self, timeout: float = 60) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        assert not self.errors, self.errors


def start_worker(
    s: Settings, prepare: Callable[[Worker], None] | None = None, **overrides: Any
) -> RunningWorker:
    """A worker running in a thread; ``prepare`` sees it first (e.g. to inject faults)."""
    cfg = WorkerConfig(model="fraud", group_id=f"{s.topic_prefix}-worker", batch_timeout=0.05)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    worker = build_worker(s, cfg)
    if prepare is not None:
        prepare(worker)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return RunningWorker(worker, thread, errors)


def predictions(s: Settings, expected: int, timeout: float = 120) -> list[dict[str, Any]]:
    recs = consume_all(s, Topics(s.topic_prefix).predictions, expected, timeout)
    return [r.json() for r in recs]


def dlq(s: Settings, expected: int, timeout: float = 60) -> list[Record]:
    return consume_all(s, Topics(s.topic_prefix).dlq, expected, timeout)


def wait_until(predicate: Any, timeout: float = 60, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def served_counts(preds: list[dict[str, Any]]) -> Counter[str]:
    return Counter(p["event_id"] for p in preds if p["served"])


def drain(s: Settings, *running: RunningWorker, timeout: float = 240) -> None:
    """Wait until the workers' group has committed every event of the topic (or a worker
    stopped), then stop them: the condition itself, not an idle timeout."""
    group, topic = running[0].worker.cfg.group_id, Topics(s.topic_prefix).events
    wait_until(
        lambda: (
            committed_total(s, group, topic) >= topic_size(s, topic)
            or any(not w.thread.is_alive() for w in running)
        ),
        timeout,
        every=0.5,
    )
    for w in running:
        w.stop()


def stop_when_committed(s: Settings, proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    """Wait until the worker group (`<prefix>-worker`) has committed every event of the topic, or
    `proc` (a `driftline worker`) exited; then SIGTERM it (it finishes its batch and exits 0).
    Its exit status and stderr (read all along, so a chatty worker never blocks on the pipe).

    The condition itself instead of ``--exit-when-idle``. The offsets are read read_uncommitted:
    a killed worker's pending transaction cannot stall the fetch (the offsets are the same)."""
    err: list[str] = []
    reader = threading.Thread(
        target=lambda: err.append(proc.stderr.read() if proc.stderr else ""), daemon=True
    )
    reader.start()
    topic = Topics(s.topic_prefix).events
    group = f"{s.topic_prefix}-worker"
    probe = Consumer({**s.kafka_client_config(), "group.id": group, "isolation.level": "read_uncommitted"})
    try:
        wait_until(
            lambda: proc.poll() is not None or committed_of(probe, topic) >= topic_size(s, topic),
            timeout,
            0.5,
        )
    finally:
        probe.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    reader.join(10)
    return rc, "".join(err)
