"""``driftline demo``: the whole loop on the local stack, in one command.

1. Start the local stack (Kafka, Redis) and create the topics; make sure a production fraud model
   exists (train one on generator data if not).
2. Start the worker, the outcome joiner, the retrainer and the HTTP API as child processes
   (``driftline worker`` etc., logs in the stack directory).
3. Stream a synthetic card-fraud day: a covariate shift at a third of it, a concept flip at two
   thirds, labels 200 events late, and a few broken events. While a canary waits for evidence
   after the stream ends, more post-drift traffic follows.
4. Show live progress: events/s, consumer lag, the PSI of a drifting feature, drift incidents as
   they open, update and resolve (and how many detector signals they gather), retrains, canaries
   and rollout decisions. Then a summary (events, incidents, model versions, accuracy before and
   after) and an HTML drift report; stop the children, and the stack too unless ``--keep``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from driftline.errors import DriftlineError
from driftline.model_inputs import parse_view, version_inputs
from driftline.produce import produce_generated
from driftline.report import gather, render
from driftline.settings import Settings
from driftline.stack import LocalStack
from driftline.training_data import SYNTHETIC_ENTITIES, synthetic_training_set
from driftline.wiring import model_registry, redis_client
from inference.metadata import ModelVersion
from inference.training import register_trained, train_model
from stream.drift import latest_key
from stream.event_log import read_recent
from stream.events import RawEvent
from stream.offsets import end_offsets
from stream.producer import DeliveryTracker, EventProducer, produce_synthetic
from stream.synthetic import DRIFTED_FEATURES, Batch, DriftSchedule, FraudGenerator
from stream.topics import Topics, create_topics

MODEL = "fraud"
BROKEN_EVENTS = [
    b"{this is not json",
    b'{"event_id":"demo-bad-1","entity_id":"card-1","ts":"2026-01-01T00:00:00Z","features":{"amount":[12]}}',
    b'{"event_id":"demo-bad-2","ts":"2026-01-01T00:00:00Z","features":{}}',
]
DRIFT_WINDOW_SECONDS = 1000.0  # of event time: the generator makes 2 events/s, so ~2,000 a window
# Fast enough for a few minutes: short cooldowns, a big canary, a small training window.
DEMO_SETTINGS: dict[str, Any] = {
    "drift_window_seconds": DRIFT_WINDOW_SECONDS,
    "drift_cooldown_seconds": DRIFT_WINDOW_SECONDS,  # a lasting drift re-alerts every window
    "retrain_cooldown_seconds": 5.0,
    "canary_fraction": 0.5,
    "rollout_min_outcomes": 300,
    "retrain_recent_rows": 6000,
    "retrain_min_rows": 2000,
    "label_wait_seconds": 600,
    # Event time runs ~2,000x faster than the wall clock here (see run_demo): demo events are
    # stamped days to weeks ahead, which the worker would otherwise refuse as future_event.
    "max_future_seconds": 10 * 365 * 86_400,
}
LABEL_DELAY = 200
# As many cards as the first model's training stream: with fewer, each transacts more often,
# and the windowed counts (inputs of the model) drift from the first event.
DEMO_ENTITIES = SYNTHETIC_ENTITIES
WATCHED = next(iter(DRIFTED_FEATURES))  # a feature the covariate shift moves


DEMO_SOURCE = "demo synthetic"  # TrainingInfo.source of the demo's pre-drift model


def ensure_model(s: Settings, console: Console) -> ModelVersion:
    """The pre-drift model in production: trained on a first run, restored on later ones (an
    earlier demo left a retrained model there), so every run tells the same story."""
    registry = model_registry(s)
    deployment = registry.deployment(MODEL)
    if deployment.canary is not None:  # a trial an earlier run left: start without it
        registry.rollback(MODEL, detail={"reason": "demo: start without a trial"})
    if deployment.shadow is not None:
        registry.archive(MODEL, deployment.shadow.version, detail={"reason": "demo: start without a trial"})
    prod = deployment.production
    if prod is not None and prod.training is not None and prod.training.source == DEMO_SOURCE:
        return prod
    base = next(
        (v for v in reversed(registry.versions(MODEL)) if v.training and v.training.source == DEMO_SOURCE),
        None,
    )
    if base is not None:
        registry.promote(MODEL, base.version, detail={"reason": "demo: start from the pre-drift model"})
        console.print(f"restored {base.ref}, the demo's pre-drift model, to production")
        return registry.get(MODEL, base.version)
    console.print(
        "no production model yet: training logistic regression on 20,000 synthetic events with their "
        "online features (replayed through the feature store engine) ..."
    )
    view, record = parse_view("fraud")  # the synthetic stream's view, recorded with the version
    data = synthetic_training_set(20_000, seed=0, view=view)
    trained = train_model(
        data.numeric, data.categorical, data.labels, data.ts, source=DEMO_SOURCE, warmup=data.warmup
    )
    inputs = version_inputs(record, data.raw)
    meta = register_trained(registry, MODEL, trained, stage="production", inputs=inputs)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.training.metrics.items())
    console.print(f"registered {meta.ref} (ONNX, sha256 {meta.sha256[:12]}…); holdout {metrics}")
    return meta


def settings_env(s: Settings) -> dict[str, str]:
    """``s`` as DRIFTLINE_* variables, for a child process to see the same settings."""
    return s.as_env()


class Children:
    """The demo's services, each a ``driftline`` child process with its log in the stack dir."""

    def __init__(self, s: Settings) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.env = {**os.environ, **settings_env(s)}
        self.dir = s.stack_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> None:
        log = self.dir / f"demo-{name}.log"
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-c", "from driftline.cli import main; main()", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.logs[name] = log

    def dead(self, *optional: str) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None and name not in optional]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@dataclass
class Progress:
    """What the live view shows, fed by the consumers of the demo's output topics."""

    run_id: str
    n: int
    covariate_at: int
    concept_at: int  # the earliest index of the concept flip
    flipped_at: int | None = None  # where it happened (it waits for the first retrained model)
    started: float = field(default_factory=time.monotonic)
    scored: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    lag: int | None = None
    psi: float | None = None
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> its latest event
    opened: Counter[int] = field(default_factory=Counter)  # per model version
    signals: int = 0
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    steps: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = 0
    last_activity: float = field(default_factory=time.monotonic)  # of alerts and loop steps
    promoted_after_flip: int = 0
    # (phase, model version) -> [outcomes, correct]
    accuracy: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def phase(self, index: int) -> str:
        if index < self.covariate_at:
            return "before drift"
        flipped = self.flipped_at is not None and index >= self.flipped_at
        return "concept flip" if flipped else "covariate shift"

    def on_prediction(self, p: dict[str, Any]) -> None:
        run, _, _ = p["event_id"].rpartition("-")
        if p["served"] and run == self.run_id:
            self.scored += 1
            self.served_by[f"{p['model']}:{p['version']}"] += 1

    def on_outcome(self, o: dict[str, Any]) -> None:
        run, _, index = o["event_id"].rpartition("-")
        if not o["served"] or not run.startswith(self.run_id):
            return
        key = (self.phase(int(index)) if run == self.run_id else "concept flip", o["version"])
        acc = self.accuracy.setdefault(key, [0, 0])
        acc[0] += 1
        acc[1] += int(o["correct"])

    def on_incident(self, e: dict[str, Any]) -> None:
        """An incident event from ``<prefix>.alerts``."""
        self.last_activity = time.monotonic()
        kind = e.get("kind")
        if kind == "opened" and e["incident_id"] not in self.incidents:
            self.opened[int(e["version"])] += 1
        self.incidents[e["incident_id"]] = e
        color = {"opened": "red", "updated": "yellow", "resolved": "green"}.get(str(kind), "white")
        detail = f" ({'; '.join(e['changes'])})" if kind != "opened" and e.get("changes") else ""
        self.lines.append(
            f"[{color}]incident {kind}[/{color}] {e['model']}:{e['version']} {e['severity']} "
            f"{e['incident_id'][:8]}: {e['summary']}{detail}"
        )

    def on_signal(self, _: dict[str, Any]) -> None:
        """A detector signal from ``<prefix>.signals``: counted, the incident carries its detail."""
        self.signals += 1

    def open_incidents(self) -> int:
        return sum(e.get("kind") != "resolved" for e in self.incidents.values())

    def on_step(self, e: dict[str, Any]) -> None:
        self.last_activity = time.monotonic()
        self.steps.append(e)
        flip = self.flipped_at
        if e.get("kind") == "promoted" and flip is not None and self.scored >= flip + 2 * LABEL_DELAY:
            self.promoted_after_flip += 1
        line = describe(e)
        if line:
            self.lines.append(line)

    def count(self, kind: str) -> int:
        return sum(e.get("kind") == kind for e in self.steps)

    def view(self, production: str, canary: str | None) -> Group:
        elapsed = time.monotonic() - self.started
        t = Table("scored", "events/s", "consumer lag", f"PSI {WATCHED}", "production", "canary", "incidents")
        t.add_row(
            f"{self.scored:,} / {self.n:,}",
            f"{self.scored / elapsed:,.0f}" if elapsed > 0 else "-",
            "-" if self.lag is None else f"{self.lag:,}",
            "-" if self.psi is None else f"{self.psi:.3f}",
            production,
            canary or "-",
            f"{len(self.incidents)} ({self.open_incidents()} open) from {self.signals} signals",
        )
        return Group(t, *self.lines)


def describe(event: dict[str, Any]) -> str | None:
    """One line for a step on ``<prefix>.models`` (None: not worth a line)."""
    kind, name = event.get("kind"), event.get("name")
    ref = f"{name}:{event.get('version')}"
    if kind == "retrain_started":
        return f"[bold]retrain started[/bold] for {name}: {event['reason']}"
    if kind in ("retrain_finished", "retrain_failed"):
        return f"[bold]{kind.replace('_', ' ')}[/bold]: {event['reason']}"
    if kind == "canary_started":
        return f"[bold]canary[/bold] {ref} serves {100 * (event.get('fraction') or 0):.0f}% of entities"
    if kind == "rollout_decided":
        action = event["detail"].get("action")
        color = "green" if action == "promote" else "red"
        return f"[bold {color}]rollout decision: {action}[/bold {color}] - {event['reason']}"
    if kind in ("promoted", "rolled_back"):
        return f"{kind.replace('_', ' ')}: {ref} is now {event.get('stage')}"
    return None


def _latest_event_ts(s: Settings, topic: str) -> float:
    """The newest event time among the topic's latest events (0 for an empty topic)."""
    newest = 0.0
    for msg in read_recent(s.kafka_client_config(), topic, 3000):
        try:
            newest = max(newest, RawEvent.model_validate_json(msg.value() or b"").ts.timestamp())
        except ValidationError:
            continue
    return newest


def _follower(s: Settings, topic: str, group: str) -> Consumer:
    c = Consumer({**s.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    c.assign(end_offsets(c, topic))  # only what this run adds
    return c


def _lag(s: Settings, lag_reader: Consumer, topic: str) -> int | None:
    ends = end_offsets(lag_reader, topic, timeout=2)
    committed = lag_reader.committed([TopicPartition(topic, tp.partition) for tp in ends], timeout=2)
    return sum(max(end.offset - max(c.offset, 0), 0) for end, c in zip(ends, committed, strict=True))


def run_demo(s: Settings, n: int, rate: float, keep: bool, console: Console) -> None:
    s = s.model_copy(update=DEMO_SETTINGS)
    topics = Topics(s.topic_prefix)
    console.rule("[bold]Driftline demo[/bold]")
    LocalStack(s, log=lambda m: console.print(f"[dim]{m}[/dim]", highlight=False)).up()
    create_topics(AdminClient(s.kafka_client_config()), topics, s.partitions, s.replication_factor)
    model = ensure_model(s, console)
    registry = model_registry(s, publish=False)
    first_production = model.ref
    # Event time runs ~2,000x faster than the wall clock here, so a second demo would start in
    # windows (and behind feature-store watermarks) an earlier one already passed: start after
    # every event already in the topic, a day later, so that no 24 h aggregate carries over.
    latest = _latest_event_ts(s, topics.events)
    start_ts = max(time.time(), latest + 86_400 + 2 * DRIFT_WINDOW_SECONDS if latest else 0.0)
    run_id = secrets.token_hex(4)
    progress = Progress(run_id, n, covariate_at=n // 3, concept_at=2 * n // 3)
    followers = {
        "predictions": _follower(s, topics.predictions, "driftline-demo"),
        "outcomes": _follower(s, topics.outcomes, "driftline-demo-outcomes"),
        "alerts": _follower(s, topics.alerts, "driftline-demo-alerts"),
        "signals": _follower(s, topics.signals, "driftline-demo-signals"),
        "models": _follower(s, topics.models, "driftline-demo-models"),
        "dlq": _follower(s, topics.dlq, "driftline-demo-dlq"),
    }
    lag_reader = Consumer({**s.kafka_client_config(), "group.id": f"{s.topic_prefix}-worker"})
    children = Children(s)
    children.start("worker", "worker", "--batch-size", "500", "--metrics-port", "0")
    children.start("outcomes", "outcomes", "--metrics-port", "0")
    children.start("retrainer", "retrainer", "--log-level", "info", "--metrics-port", "0")
    children.start("api", "api")
    console.print(
        f"worker, outcome joiner, retrainer and API (http://{s.api_host}:{s.api_port}/docs) started; "
        f"logs: {s.stack_dir}/demo-*.log. Streaming {n:,} events at {rate:,.0f}/s: covariate shift "
        f"at {progress.covariate_at:,}, concept flip at {progress.concept_at:,} or, if later, once a model "
        f"retrained on the shift serves; labels {LABEL_DELAY} events late.",
        highlight=False,
    )

    produced: dict[str, Any] = {}

    def produce() -> None:
        try:
            produced["tally"] = _produce_paced(s, progress, rate, start_ts, run_id, model.version)
            broken = EventProducer(s.kafka_client_config())
            for value in BROKEN_EVENTS:
                broken.send(topics.events, "card-broken", value)
            broken.flush()
            # Keep post-drift traffic coming while a canary waits for labeled outcomes, or until a
            # model retrained after the concept flip is in production (alerts need new events).
            extra = 0
            while not produced.get("stop") and extra < 40:
                time.sleep(1.0)
                if produced.get("settled") and produced.get("recovered"):
                    if produced.get("tail"):
                        break
                    # Traffic after the promotion: the worker moves to the new version, which
                    # resolves the old version's incident as superseded.
                    produced["tail"] = True
                    extra += 1
                    produce_generated(
                        s, 2000, rate, seed=100 + extra, entities=DEMO_ENTITIES,
                        schedule=DriftSchedule(covariate_at=0, concept_at=0), label_delay=LABEL_DELAY,
                        start_ts=start_ts + progress.n / 2 + (extra - 1) * 1000, console=Console(quiet=True),
                        run_id=f"{run_id}x{extra}",
                    )  # fmt: skip
                    continue
                on_trial = registry.deployment(MODEL).canary is not None
                if on_trial or not (produced.get("recovered") or produced.get("running")):
                    extra += 1
                    produce_generated(
                        s,
                        2000,
                        rate,
                        seed=100 + extra,
                        entities=DEMO_ENTITIES,
                        schedule=DriftSchedule(covariate_at=0, concept_at=0),
                        label_delay=LABEL_DELAY,
                        start_ts=start_ts + progress.n / 2 + (extra - 1) * 1000,
                        console=Console(quiet=True),
                        run_id=f"{run_id}x{extra}",
                    )
        except BaseException as exc:
            produced["error"] = exc
        finally:
            produced["done"] = True

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    deadline = time.monotonic() + max(270.0, 4 * n / max(rate, 1)) + PATIENCE_SECONDS
    last_poll = 0.0
    production, canary = first_production, None
    try:
        with Live(progress.view(production, canary), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline:
                for name, c in followers.items():
                    for msg in c.consume(2000, timeout=0.05):
                        if msg.error() is not None or not msg.value():
                            continue
                        value = orjson.loads(msg.value() or b"{}")
                        if name == "predictions":
                            progress.on_prediction(value)
                        elif name == "outcomes":
                            progress.on_outcome(value)
                        elif name == "alerts":
                            progress.on_incident(value)
                        elif name == "signals":
                            progress.on_signal(value)
                        elif name == "models":
                            progress.on_step(value)
                        else:
                            progress.dead_letters += 1
                if time.monotonic() - last_poll > 1.0:
                    last_poll = time.monotonic()
                    dep = registry.deployment(MODEL)
                    production = dep.production.ref if dep.production else "-"
                    canary = dep.canary.ref if dep.canary else None
                    progress.lag = _lag(s, lag_reader, topics.events)
                    if dep.production is not None:
                        raw = redis_client(s).hget(
                            latest_key(s.topic_prefix, MODEL, dep.production.version), f"psi:{WATCHED}"
                        )
                        progress.psi = orjson.loads(raw)["statistic"] if raw else progress.psi
                    if children.dead("api"):  # the API is a bonus: a taken port must not stop the demo
                        raise DriftlineError(
                            f"{', '.join(children.dead('api'))} stopped; see {s.stack_dir}/demo-*.log"
                        )
                    running = progress.count("retrain_started") > progress.count(
                        "retrain_finished"
                    ) + progress.count("retrain_failed")
                    # Settled: no canary, no job, and nothing new for a while (labels lag the events).
                    quiet = time.monotonic() - progress.last_activity > 10.0
                    produced["settled"] = canary is None and not running and quiet
                    produced["recovered"] = progress.promoted_after_flip > 0
                    produced["running"] = running
                    if (
                        produced.get("done")
                        and progress.scored >= progress.n
                        and produced["settled"]
                        and progress.lag == 0
                    ):
                        live.update(progress.view(production, canary))
                        break
                live.update(progress.view(production, canary))
    finally:
        produced["stop"] = True
        children.stop()
        for c in (*followers.values(), lag_reader):
            c.close()
    if "error" in produced:
        raise DriftlineError(f"producer failed: {produced['error']}")
    _summary(s, progress, first_production, production, console)
    report_path = s.cache_dir / "report.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render(gather(s, MODEL)))
    console.print(f"drift report: {report_path}", highlight=False)
    if keep:
        console.print("the stack keeps running (`driftline stack down` stops it)")
    else:
        LocalStack(s).down()
        console.print("stack stopped (run with --keep to leave it up)")
    if progress.scored < progress.n:
        raise DriftlineError(f"only {progress.scored:,} of {progress.n:,} events were scored in time")


PACE_CHUNK = 500
PATIENCE_SECONDS = 240.0  # the longest the concept flip waits for a retrained model (loaded machines)


def _produce_paced(
    s: Settings, progress: Progress, rate: float, start_ts: float, run_id: str, first: int
) -> DeliveryTracker:
    """The main stream: the covariate shift at its index; the concept flip at its index, or - if
    no model retrained on the shift serves by then - once one does (traffic keeps coming, still
    shifted, at a quarter of the rate, for at most `PATIENCE_SECONDS`). Two changes in a row on one
    model version would be one incident; paced like this, each change is its own."""
    n = progress.n
    gen = FraudGenerator(
        seed=42, entities=DEMO_ENTITIES, start_ts=start_ts,
        schedule=DriftSchedule(covariate_at=progress.covariate_at, concept_at=None, width=n // 30),
    )  # fmt: skip
    gen.run_id = run_id  # event ids are "<run_id>-<index>"
    waited_since: float | None = None

    def retrained_serves() -> bool:  # a version newer than the one serving at the start
        return any(e.get("kind") == "promoted" and int(e.get("version") or 0) > first for e in progress.steps)

    def batches() -> Iterator[Batch]:
        nonlocal waited_since
        sent = 0
        while sent < progress.n:
            if gen.schedule.concept_at is None and sent >= progress.concept_at:
                waited_since = waited_since or time.monotonic()
                if retrained_serves() or time.monotonic() - waited_since > PATIENCE_SECONDS:
                    gen.schedule = dataclasses.replace(gen.schedule, concept_at=sent)
                    progress.flipped_at = sent
                else:
                    progress.n += PACE_CHUNK  # still shifted, not flipped yet: the stream grows
                    if rate > 0:
                        time.sleep(3 * PACE_CHUNK / rate)  # a quarter of the rate while waiting
            yield from gen.batches(PACE_CHUNK, chunk=PACE_CHUNK)
            sent += PACE_CHUNK

    producer = EventProducer(s.kafka_client_config())
    topics = Topics(s.topic_prefix)
    produce_synthetic(producer, batches(), topics.events, topics.labels, LABEL_DELAY, rate)
    return producer.flush()


def _summary(s: Settings, p: Progress, first: str, last: str, console: Console) -> None:
    console.print()
    console.rule("[bold]Summary[/bold]")
    console.print(  # two short lines: a narrow terminal must not wrap them mid-phrase
        f"{p.scored:,} events scored through Kafka ({p.dead_letters} broken ones in {s.topic_prefix}.dlq); "
        f"incidents: {len(p.incidents)} opened, {len(p.incidents) - p.open_incidents()} resolved "
        f"(from {p.signals} detector signals)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"retrains: {p.count('retrain_started')}; promotions: {p.count('promoted')}, "
        f"rollbacks: {p.count('rolled_back')}; production {first} -> {last}",
        highlight=False,
        soft_wrap=True,
    )
    if p.incidents:
        inc = Table("incident", "model", "severity", "state", "summary", title="drift incidents")
        for e in p.incidents.values():
            state = "open" if e.get("kind") != "resolved" else f"resolved ({e['incident'].get('resolution')})"
            inc.add_row(
                e["incident_id"][:12], f"{e['model']}:{e['version']}", e["severity"], state, e["summary"]
            )
        console.print(inc)
    t = Table("phase", "model", "labeled outcomes", "accuracy", title="live accuracy (served predictions)")
    for (phase, version), (total, correct) in sorted(
        p.accuracy.items(),
        key=lambda kv: (["before drift", "covariate shift", "concept flip"].index(kv[0][0]), kv[0][1]),
    ):
        if total >= 50:
            t.add_row(phase, f"{MODEL}:{version}", f"{total:,}", f"{correct / total:.3f}")
    console.print(t)
