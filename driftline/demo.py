"""``driftline demo``: the main job on the local stack.

1. Make sure a production fraud model exists (train one on generator data if not).
2. Start the streaming inference worker (in this process, on a thread).
3. Produce a synthetic card-fraud stream with covariate drift halfway, plus a few broken events.
4. Read the predictions back from Kafka and print, per window of events, throughput, the drifted
   feature's mean and the model's mean score and positive rate, which move at the drift point;
   then the drift alerts and the dead letters.
5. The loop (`driftline.demo_loop`): the outcome joiner and the Faust retrainer run beside the
   worker; a critical drift alert starts a retrain, the candidate gets a canary, more drifted
   traffic gives it labeled outcomes, and the rollout decision (promote or roll back) ends it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer
from rich.console import Console
from rich.table import Table

from detectors.window_store import latest_event_time
from driftline.demo_loop import DEMO_LOOP_SETTINGS, LoopProcesses, follow_loop
from driftline.errors import DriftlineError
from driftline.produce import produce_generated
from driftline.report import gather, render
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import build_worker, feature_view, model_registry, online_store, redis_client
from inference.metadata import ModelVersion
from inference.training import register_trained, train_model
from stream.offsets import end_offsets
from stream.producer import DeliveryTracker, EventProducer
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from stream.worker import WorkerConfig

MODEL = "fraud"
BROKEN_EVENTS = [
    b"{this is not json",
    b'{"event_id":"demo-bad-1","entity_id":"card-1","ts":"2026-01-01T00:00:00Z","features":{"amount":[12]}}',
    b'{"event_id":"demo-bad-2","ts":"2026-01-01T00:00:00Z","features":{}}',
]


@dataclass
class Window:
    """Predictions for events ``first .. first + size - 1`` of this run (by event index)."""

    first: int
    size: int
    scores: list[float] = field(default_factory=list)
    predicted: int = 0
    processing_ms: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return len(self.scores) >= self.size


def ensure_model(s: Settings, console: Console) -> ModelVersion:
    registry = model_registry(s)
    deployment = registry.deployment(MODEL)
    if deployment.production is not None:
        return deployment.production
    console.print(
        "no production model yet: training logistic regression on 20,000 synthetic events with their "
        "online features (replayed through the feature store engine) ..."
    )
    data = synthetic_training_set(20_000, seed=0, view=feature_view(s))
    trained = train_model(data.numeric, data.categorical, data.labels, data.ts, source="demo synthetic")
    meta = register_trained(registry, MODEL, trained, stage="production")
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.training.metrics.items())
    console.print(f"registered {meta.ref} (ONNX, sha256 {meta.sha256[:12]}…); holdout {metrics}")
    return meta


DRIFT_WINDOW_SECONDS = 1000.0  # of event time: the generator makes 2 events/s, so ~2,000 a window


def run_demo(s: Settings, n: int, drift_at: int, rate: float, console: Console) -> None:
    s = s.model_copy(update={"drift_window_seconds": DRIFT_WINDOW_SECONDS, **DEMO_LOOP_SETTINGS})
    topics = Topics(s.topic_prefix)
    model = ensure_model(s, console)
    ref = model.ref
    # Event time runs ~2,000x faster than the wall clock here, so a second demo would start in
    # windows the first one already closed: start after everything the detectors saw.
    seen = latest_event_time(redis_client(s), s.topic_prefix, model.name, model.version)
    start_ts = max(time.time(), (seen or 0.0) + 2 * DRIFT_WINDOW_SECONDS)
    consumer = Consumer(
        {**s.kafka_client_config(), "group.id": "driftline-demo", "enable.auto.commit": False}
    )
    consumer.assign(end_offsets(consumer, topics.predictions))  # only this run's predictions
    dlq = Consumer({**s.kafka_client_config(), "group.id": "driftline-demo-dlq", "enable.auto.commit": False})
    dlq.assign(end_offsets(dlq, topics.dlq))
    alerts = Consumer(
        {**s.kafka_client_config(), "group.id": "driftline-demo-alerts", "enable.auto.commit": False}
    )
    alerts.assign(end_offsets(alerts, topics.alerts))
    models = Consumer(
        {**s.kafka_client_config(), "group.id": "driftline-demo-models", "enable.auto.commit": False}
    )
    models.assign(end_offsets(models, topics.models))
    loop = LoopProcesses(s, s.stack_dir / "retrainer.log")

    worker = build_worker(s, WorkerConfig(model=MODEL, group_id=f"{s.topic_prefix}-worker", batch_size=500))
    worker_errors: list[BaseException] = []

    def run_worker() -> None:
        try:
            worker.run()
        except BaseException as exc:
            worker_errors.append(exc)

    threading.Thread(target=run_worker, daemon=True).start()

    console.rule(
        f"[bold]Driftline demo[/bold]: {n:,} events, model {ref}, covariate drift at event {drift_at:,}"
    )
    produced: dict[str, DeliveryTracker | BaseException] = {}
    run_id = secrets.token_hex(4)

    def produce() -> None:
        try:
            schedule = DriftSchedule(covariate_at=drift_at, width=n // 20)
            produced["tally"] = produce_generated(
                s,
                n,
                rate,
                seed=42,
                entities=500,
                schedule=schedule,
                label_delay=200,
                start_ts=start_ts,
                console=Console(quiet=True),
                run_id=run_id,
            )
            broken = EventProducer(s.kafka_client_config())
            for value in BROKEN_EVENTS:
                broken.send(topics.events, "card-broken", value)
            broken.flush()
        except BaseException as exc:
            produced["error"] = exc

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    table = Table("events", "pred/s", "model", "mean score", "positive %", "p99 batch ms")
    size = max(n // 10, 1)
    windows = [Window(first, min(size, n - first)) for first in range(0, n, size)]
    shown, seen, started, idle_since = 0, 0, time.monotonic(), time.monotonic()
    busiest: Counter[str] = Counter()
    while shown < len(windows) and not worker_errors:
        msgs = consumer.consume(num_messages=1000, timeout=0.5)
        if not msgs:
            if time.monotonic() - idle_since > 30:
                break
            continue
        idle_since = time.monotonic()
        for msg in msgs:
            value = msg.value()
            if msg.error() or value is None:
                continue
            p = orjson.loads(value)
            run, _, index = p["event_id"].rpartition("-")
            if run != run_id or not p["served"]:
                continue  # an older event (a backlog the worker caught up on) or a shadow score
            busiest[p["entity_id"]] += 1
            w = windows[int(index) // size]
            w.scores.append(p["score"])
            w.predicted += p["predicted"]
            w.processing_ms.append(p["processing_ms"])
            w.versions.add(f"{p['model']}:{p['version']}")
            seen += 1
        # Rows appear in event order, as soon as each window of events is fully scored.
        while shown < len(windows) and windows[shown].complete:
            w = windows[shown]
            table.add_row(
                f"{w.first:,}-{w.first + w.size - 1:,}",
                f"{seen / (time.monotonic() - started):,.0f}",
                ", ".join(sorted(w.versions)),
                f"{np.mean(w.scores):.3f}",
                f"{100 * w.predicted / len(w.scores):.1f}",
                f"{np.percentile(w.processing_ms, 99):.1f}",
                style="bold red" if w.first >= drift_at else "",
            )
            shown += 1
    producer.join(timeout=60)
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(letters) < len(BROKEN_EVENTS) and time.monotonic() < deadline:
        letters += [orjson.loads(m.value() or b"{}") for m in dlq.consume(100, timeout=0.5) if not m.error()]
    raised = [orjson.loads(m.value() or b"{}") for m in alerts.consume(1000, timeout=2.0) if not m.error()]
    console.print(table)
    for alert in raised:
        color = "red" if alert["severity"] == "critical" else "yellow"
        console.print(
            f"[{color}]{alert['severity']} drift alert[/{color}] {alert['model']}:{alert['version']} "
            f"{alert['feature']} ({alert['detector']}): {alert['message']}",
            highlight=False,
        )
    for letter in letters:
        console.print(
            f"[yellow]dead letter[/yellow] {letter['source_topic']}[{letter['source_partition']}]"
            f"@{letter['source_offset']}: {letter['reason']}",
            highlight=False,
        )
    view = feature_view(s)
    if view is not None and busiest:
        entity = busiest.most_common(1)[0][0]
        found = online_store(s, view).describe(entity)
        if found is not None:
            listed = ", ".join(
                f"{name} {found.values[name]:.4g}"
                for name in ("count_10m", "count_1h", "count_24h", "amount_mean_24h", "amount_max_24h")
                if isinstance(found.values.get(name), float)
            )
            console.print(
                f"online features of {entity} (as of {found.as_of:%H:%M:%S} event time, "
                f"{found.events} events): {listed}",
                highlight=False,
            )
    console.rule("[bold]The loop[/bold]: labels -> outcomes -> retrain -> canary -> decision")

    def more_traffic() -> None:
        produce_generated(
            s,
            n // 2,
            rate,
            seed=43,
            entities=500,
            schedule=DriftSchedule(covariate_at=0),
            label_delay=200,
            start_ts=start_ts + n / 2 + 10,
            console=Console(quiet=True),
        )

    registry = model_registry(s, publish=False)
    before = registry.deployment(MODEL).production
    try:
        steps = follow_loop(
            models, console, more_traffic, alive=lambda: not worker_errors and not loop.errors
        )
    finally:
        loop.stop()
        worker.stop()
        for c in (consumer, dlq, alerts, models):
            c.close()
    after = registry.deployment(MODEL).production
    if not steps:
        console.print(f"[yellow]the retrainer published nothing; see {loop.log_path}[/yellow]")
    else:
        console.print(
            f"production: {before.ref if before else '-'} -> {after.ref if after else '-'} "
            f"({len(steps)} steps on {topics.models}; retrainer log: {loop.log_path})",
            highlight=False,
        )
    if loop.errors:
        raise DriftlineError(f"outcome joiner failed: {loop.errors[0]}")
    if worker_errors:
        raise DriftlineError(f"worker failed: {worker_errors[0]}")
    if "error" in produced:
        raise DriftlineError(f"producer failed: {produced['error']}")
    console.print(
        f"{seen:,} of {n:,} events scored through Kafka by the worker; {len(letters)} broken events "
        f"in {topics.dlq}; {len(raised)} drift alerts in {topics.alerts}. Rows in red come after the "
        "drift point: inputs moved, so the score did, and the detectors said which features.\n"
        f"Next: `driftline tail alerts`, `driftline features get card-000001`, `driftline models list`, "
        f"metrics at :{s.metrics_port}/metrics "
        "while `driftline worker` runs.",
        highlight=False,
    )
    report_path = s.cache_dir / "report.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render(gather(s, MODEL)))
    console.print(f"drift report: {report_path} (open it in a browser; `driftline report` makes a new one)")
    if seen < n or len(letters) < len(BROKEN_EVENTS):
        raise DriftlineError(f"demo saw {seen}/{n} predictions and {len(letters)} dead letters")
