"""Throughput and end-to-end latency of one Driftline worker as users run it, against Quix Streams.

Run on demand against the local stack (`driftline stack up`); not a test::

    .venv/bin/python benchmarks/worker_throughput.py [--events N] [--warmup-events W] [--quick]

Every configuration runs on **events it has never seen**: its own topic prefix (``bench-<id>-<k>``:
its own topics, model registry namespace, feature-store and drift keys, all deleted at the end),
into which the same ``W + N`` synthetic fraud events (seed 1, 1,000 cards) are produced before
it starts. The clock of a configuration starts when its first ``W`` events (``--warmup-events``,
default 5,000) are done, so start-up (connecting, the first partition assignment, loading the
model, filling the feature store's state cache) is not counted; the remaining ``N`` are timed.

1. **The worker** (``build_worker``, a fresh consumer group, one process): events/s = N / (end of
   the batch that reached W .. end of the commit of the batch that reached W + N), taken by
   wrapping ``Worker.process`` (which returns once a batch's outputs are acknowledged and its
   offsets committed). The headline is the default worker: feature view ``fraud`` (28 features
   from the Redis online store) with the drift detectors on (merged windows of 300 s, ADWIN on
   the score, CUSUM on the 12 numeric raw features and the score), batch 1000, at-least-once.
   Extra rows: batch 100, ``--exactly-once``, detectors off, raw event features + detectors off.
2. **Quix Streams** (``benchmarks/quix_baseline.py``, a separate process, its defaults): the same
   28 features in its RocksDB state, the same model, per event; events/s = N / (the W-th .. the
   (W + N)-th event scored and handed to its producer: the final flush and commit are left out,
   in Quix's favour). The first ``--check`` predictions carry their features, which are compared
   with Driftline's engine on the same events (`check_features`): equal bit for bit or the run
   fails.
   ``--redis-cluster`` adds the default worker once more with the local stack's Redis Cluster
   (``driftline stack up --redis-cluster``: 3 masters + 3 replicas on this machine) as its Redis,
   in the same run: the cost of the cluster per worker (target: at most 15%).
3. **Faust** (``--faust``): ``benchmarks/faust_baseline.py``, per event, raw features, no aggregates.
4. **Latency at a fixed rate** (``--rate``, default 5,000 events/s): a separate load process sends
   new events and reads ``<prefix>.predictions`` (read_committed); latency = arrival of an event's
   prediction - the time its event was handed to the producer. p50/p99 over ``--steady`` seconds
   after ``--warmup`` seconds, for batch sizes 100 and 1000, at-least-once and exactly-once, with
   features and detectors on.
5. **Where the time goes**: every stage of ``Worker.process`` timed inside real batches of fresh
   events (`benchmarks/worker_stages.py`): decode, the feature store (read, decode, engine,
   write), scoring, each detector family, the prediction records, produce + flush + commit.

The table prints each configuration's events/s and its ratio to the Quix Streams run of the same
benchmark run (the machine is shared: compare rows of one run, not across runs).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import multiprocessing as mp
import os
import platform
import pstats
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console

from benchmarks.worker_stages import breakdown
from driftline.produce import produce_generated
from driftline.redis_keys import delete_namespace
from driftline.settings import Settings
from driftline.stack import LocalStack
from driftline.wiring import build_worker, model_registry, redis_client
from feature_store.definitions import fraud_feature_view
from feature_store.engine import Engine
from inference.metadata import ModelVersion
from stream.decode import decode_batch
from stream.producer import PRODUCER_DEFAULTS
from stream.synthetic import DriftSchedule, FraudGenerator
from stream.topics import Topics, create_topics, delete_topics
from stream.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parents[1]
FAUST_APP = REPO / "benchmarks" / "faust_baseline.py"
QUIX_APP = REPO / "benchmarks" / "quix_baseline.py"
MODEL = "fraud"
PARTITIONS = 6
TARGET_EVENTS_PER_S = 40_000
TARGET_RATIO = 3.0
TARGET_P99_MS = 50.0
TARGET_DETECTOR_COST = 0.20
TARGET_BATCH_100 = 15_000
TARGET_EXACTLY_ONCE = 0.70
TARGET_CLUSTER_COST = 0.15  # of per-worker throughput, Redis Cluster vs a single Redis (issue 14)


# ---- results ---------------------------------------------------------------------------------
@dataclass
class Result:
    mode: str
    batch: int
    events: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""
    key: str = ""
    missing: int = 0  # latency runs: events of the steady window whose prediction never arrived

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Timing:
    """Filled in by the wrapper around one worker's ``process``."""

    target: int
    warmup: int = 0
    first: float | None = None
    warm: float | None = None  # end of the batch that reached `warmup` events: the clock starts
    warm_count: int = 0
    last: float = 0.0
    count: int = 0
    batches: int = 0
    # per batch: (wall-clock start, seconds from the start of process() to its commit), size
    seconds: list[tuple[float, float]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    # CPU between the clock's start and the target's commit: the worker thread's, the whole
    # process's (incl. librdkafka's threads) and the machine's (incl. the broker), as
    # (at start, at target) pairs
    thread_cpu: list[float] = field(default_factory=list)
    process_cpu: list[float] = field(default_factory=list)
    machine: list[tuple[int, int]] = field(default_factory=list)

    def cpu_note(self) -> str:
        if len(self.thread_cpu) < 2 or self.warm is None:
            return ""
        wall = self.last - self.warm
        busy = self.machine[1][0] - self.machine[0][0]
        total = self.machine[1][1] - self.machine[0][1]
        cores = os.cpu_count() or 1
        return (
            f"CPU: worker thread {100 * (self.thread_cpu[1] - self.thread_cpu[0]) / wall:.0f}%, "
            f"process {100 * (self.process_cpu[1] - self.process_cpu[0]) / wall:.0f}%, "
            f"machine {100 * cores * busy / max(total, 1):.0f}% of {100 * cores}%"
        )


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_marks(timing: Timing) -> None:
    timing.thread_cpu.append(time.thread_time())
    t = os.times()
    timing.process_cpu.append(t.user + t.system)
    timing.machine.append(machine_jiffies())


class Timed:
    """Delegates to a confluent-kafka client, timing the calls named in `timed` (seconds)."""

    def __init__(self, client: Any, *timed: str) -> None:
        self._client = client
        self.spent: dict[str, list[tuple[float, float]]] = {name: [] for name in timed}  # (start, s)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.spent:
            return attr
        spent = self.spent[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            wall, started = time.time(), time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                spent.append((wall, time.perf_counter() - started))

        return call


def say(msg: str) -> None:
    print(msg, flush=True)


# ---- setup and cleanup -----------------------------------------------------------------------
class Run:
    """One configuration's prefix: its topics, registered model and keys; `close` removes all."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.prefix = settings.topic_prefix
        self.topics = Topics(self.prefix)
        self.sink = f"{self.prefix}.baseline-predictions"
        self.admin = AdminClient(settings.kafka_client_config())
        self.conf = settings.kafka_client_config()
        self.meta: ModelVersion | None = None

    def create(self) -> None:
        create_topics(self.admin, self.topics, partitions=self.s.partitions)
        for future in self.admin.create_topics(
            [NewTopic(self.sink, num_partitions=self.s.partitions, replication_factor=1)]
        ).values():
            future.result()

    def produce(self, n: int) -> float:
        started = time.perf_counter()
        tally = produce_generated(
            self.s, n, 0, seed=1, entities=1000, schedule=DriftSchedule(), label_delay=100,
            start_ts=1.7e9, console=Console(quiet=True),
        )  # fmt: skip
        if tally.failed or tally.delivered != tally.sent:
            raise RuntimeError(f"producing the events failed: {tally}")
        return time.perf_counter() - started

    def close(self) -> None:
        """Delete every topic and consumer group of the prefix (incl. Faust's and Quix's), and the keys."""
        with contextlib.suppress(Exception):
            names = [
                t
                for t in self.admin.list_topics(timeout=10).topics
                if t.startswith(self.prefix) or (t.startswith("changelog__") and self.prefix in t)
            ]
            delete_topics(self.admin, names)
        with contextlib.suppress(Exception):
            listed = self.admin.list_consumer_groups(request_timeout=10).result()
            groups = [g.group_id for g in listed.valid if g.group_id.startswith(self.prefix)]
            if groups:
                for future in self.admin.delete_consumer_groups(groups, request_timeout=10).values():
                    with contextlib.suppress(Exception):
                        future.result()
        with contextlib.suppress(Exception):
            delete_namespace(redis_client(self.s), self.prefix)  # hash-tagged keys included

    def end_offsets(self, topic: str) -> list[TopicPartition]:
        c = Consumer({**self.conf, "group.id": f"{self.prefix}-probe-{uuid.uuid4().hex[:6]}"})
        try:
            meta: Any = c.list_topics(topic, timeout=10).topics[topic]
            return [
                TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in meta.partitions
            ]
        finally:
            c.close()

    def count(self, topic: str) -> int:
        return sum(tp.offset for tp in self.end_offsets(topic))

    def commit_at_end(self, group: str, topic: str) -> None:
        """Make a fresh consumer group start at the current end of `topic`."""
        c = Consumer({**self.conf, "group.id": group, "enable.auto.commit": False})
        try:
            c.commit(offsets=self.end_offsets(topic), asynchronous=False)
        finally:
            c.close()

    def messages(self, topic: str, n: int) -> list[Message]:
        """The first `n` messages of `topic` (every partition from offset 0)."""
        c = Consumer(
            {
                **self.conf,
                "group.id": f"{self.prefix}-read-{uuid.uuid4().hex[:4]}",
                "enable.auto.commit": False,
            }
        )
        meta: Any = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        msgs: list[Message] = []
        deadline = time.monotonic() + 60
        while len(msgs) < n and time.monotonic() < deadline:
            msgs += [
                m
                for m in c.consume(num_messages=min(10_000, n - len(msgs)), timeout=0.5)
                if m.error() is None
            ]
        c.close()
        return msgs


def register_models(runs: list[Run], rows: int) -> str:
    """Train one model per feature view in a child process and register it in every run's prefix.

    scikit-learn and skl2onnx stay out of this process, so the workers measured here have the
    heap of a real ``driftline worker`` process (their objects would slow its GC pauses).
    """
    by_view: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_view.setdefault(run.s.feature_view, []).append(run.s.model_dump())
    ctx = mp.get_context("spawn")
    described = []
    for view, settings in by_view.items():
        out: Any = ctx.Queue()
        proc = ctx.Process(target=train_and_register, args=(settings, rows, out))
        proc.start()
        try:
            res: dict[str, Any] = out.get(timeout=300)
        finally:
            proc.join(30)
        if "error" in res:
            raise RuntimeError(f"training the model failed: {res['error']}")
        described.append(
            f"view {view}: {res['estimator']} (ONNX), {res['inputs']} inputs, AUC {res['auc']:.3f}"
        )
    for run in runs:
        run.meta = model_registry(run.s, publish=False).get(MODEL)
    return "; ".join(described)


def train_and_register(settings: list[dict[str, Any]], rows: int, out: Any) -> None:
    """In a child process: train logistic regression on synthetic data, register it as production
    in every prefix of `settings` (all of one feature view)."""
    try:
        from driftline.model_inputs import parse_view, version_inputs
        from driftline.training_data import synthetic_training_set
        from inference.training import train_model

        first = Settings(**settings[0])
        view, record = parse_view(first.feature_view)
        data = synthetic_training_set(rows, seed=0, view=view)
        t = train_model(
            data.numeric,
            data.categorical,
            data.labels,
            data.ts,
            estimator="logreg",
            source="benchmark",
            warmup=data.warmup,
        )
        # As `driftline models train` registers it: with its view, so its warm aggregates are monitored.
        inputs = version_inputs(record, data.raw)
        for s in settings:
            model_registry(Settings(**s)).register(
                MODEL,
                t.onnx_bytes,
                t.features,
                training=t.training,
                reference=t.reference,
                score_reference=t.score_reference,
                stage="production",
                inputs=inputs,
            )
        out.put(
            {
                "estimator": t.training.estimator,
                "auc": t.training.metrics.get("auc", float("nan")),
                "inputs": len(t.features),
            }
        )
    except Exception as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


# ---- 1. worker throughput --------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One worker configuration, measured on its own prefix."""

    key: str
    label: str
    view: str = "fraud"
    detectors: bool = True
    batch: int = 1000
    exactly_once: bool = False
    redis_cluster: bool = False  # the feature store, drift windows and registry on a Redis Cluster


# `--redis-cluster`: the default worker again, its Redis being the local stack's Redis Cluster.
CLUSTER = Config("cluster", "worker: fraud view + detectors, Redis Cluster", redis_cluster=True)
CONFIGS = [
    Config("full", "worker: fraud view + detectors (default)"),
    Config("b100", "worker: fraud view + detectors", batch=100),
    Config("eos", "worker: fraud view + detectors, exactly-once", exactly_once=True),
    Config("nodet", "worker: fraud view, detectors off", detectors=False),
    Config("raw", "worker: raw features, detectors off", view="none", detectors=False),
]


def timed_worker(run: Run, cfg: WorkerConfig, target: int, warmup: int = 0) -> tuple[Worker, Timing]:
    """A worker whose ``process`` records when `warmup` events were done and the last commit's end."""
    worker = build_worker(run.s, cfg)
    timing = Timing(target, warmup)
    process = worker.process

    def timed(msgs: list[Message]) -> None:
        wall, started = time.time(), time.perf_counter()
        if timing.first is None:
            timing.first = started
        process(msgs)  # returns once the batch's outputs are acknowledged and offsets committed
        timing.last = time.perf_counter()
        timing.seconds.append((wall, timing.last - started))
        timing.sizes.append(len(msgs))
        timing.count += len(msgs)
        timing.batches += 1
        if timing.warm is None and timing.count >= timing.warmup:
            timing.warm, timing.warm_count = timing.last, timing.count
            cpu_marks(timing)
        if timing.count >= timing.target:
            cpu_marks(timing)
            worker.stop()

    setattr(worker, "process", timed)  # noqa: B010 (instance attribute over the method)
    return worker, timing


def run_in_thread(target: Callable[[], None], timeout: float) -> list[BaseException]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name="bench-worker", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        errors.append(TimeoutError(f"worker still running after {timeout:.0f}s"))
    return errors


def worker_throughput(
    run: Run, conf: Config, total: int, warmup: int, timeout: float, profile: cProfile.Profile | None = None
) -> Result:
    group = f"{run.prefix}-tput-{uuid.uuid4().hex[:4]}"
    cfg = WorkerConfig(
        model=MODEL,
        group_id=group,
        batch_size=conf.batch,
        batch_timeout=0.1,
        exit_when_idle=20,
        exactly_once=conf.exactly_once,
    )
    worker, timing = timed_worker(run, cfg, total, warmup)
    before = run.count(run.topics.predictions)
    body: Callable[[], None] = worker.run if profile is None else lambda: profile.runcall(worker.run)
    errors = run_in_thread(body, timeout)
    if errors:
        worker.stop()
        raise RuntimeError(f"worker ({conf.key}) failed: {errors[0]!r}")
    if timing.warm is None or timing.count < total:
        raise RuntimeError(f"worker ({conf.key}) consumed {timing.count} of {total} events")
    consumed = worker.metrics.registry.get_sample_value("driftline_events_consumed_total") or 0
    written = run.count(run.topics.predictions) - before
    dead = (
        worker.metrics.registry.get_sample_value("driftline_events_processed_total", {"outcome": "dlq"}) or 0
    )
    if consumed != timing.count or written < timing.count - dead:
        raise RuntimeError(
            f"worker ({conf.key}): {timing.count} processed, metrics say {consumed}, "
            f"{written} predictions written, {dead} dead letters"
        )
    return Result(
        conf.label,
        conf.batch,
        timing.count - timing.warm_count,
        timing.last - timing.warm,
        note=f"{timing.batches} batches, first {timing.warm_count:,} events not timed; {timing.cpu_note()}",
        key=conf.key,
    )


# ---- 2. Quix Streams baseline ----------------------------------------------------------------
def quix_throughput(run: Run, total: int, warmup: int, check: int, timeout: float, workdir: Path) -> Result:
    result_file = workdir / "quix-result.json"
    log_file = workdir / "quix.log"
    env = {
        **os.environ,
        "BENCH_PREFIX": run.prefix,
        "BENCH_GROUP": f"{run.prefix}-quix",
        "BENCH_SOURCE": run.topics.events,
        "BENCH_SINK": run.sink,
        "BENCH_STATE_DIR": str(workdir / "state"),
        "BENCH_EXPECT": str(total),
        "BENCH_WARMUP": str(warmup),
        "BENCH_CHECK": str(check),
        "BENCH_RESULT": str(result_file),
        "DRIFTLINE_KAFKA_BOOTSTRAP": run.s.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": run.s.redis_url,
    }
    res = run_app(
        [str(quix_python()), str(QUIX_APP)], env, workdir, result_file, log_file, timeout, "Quix Streams"
    )
    secs = float(res["done"]) - float(res["warm"])
    return Result(
        "Quix Streams 3.x: same 28 features in its state, per event",
        1,
        total - warmup,
        secs,
        note=(
            f"first {warmup:,} events not timed; clock stops at the last event handed to its producer "
            f"(its final flush + commit took {float(res['stopped']) - float(res['done']):.1f}s more, not "
            f"counted); {res['dropped']} events dropped as too late"
        ),
        key="quix",
    )


def quix_python() -> Path:
    """The interpreter of the Quix Streams venv (``.venv-quix``: quixstreams pins an older
    confluent-kafka than the worker's, so it lives apart), else this one."""
    own = REPO / ".venv-quix" / "bin" / "python"
    return own if own.exists() else Path(sys.executable)


def run_app(
    cmd: list[str],
    env: dict[str, str],
    workdir: Path,
    result_file: Path,
    log_file: Path,
    timeout: float,
    name: str,
) -> dict[str, Any]:
    """Run a baseline app until it writes its result file; its result."""
    started = time.monotonic()
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not result_file.exists():
                if proc.poll() is not None and not result_file.exists():
                    tail = log_file.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"{name}: no result after {timeout:.0f}s")
                time.sleep(0.2)
            time.sleep(0.2)  # the file is written in one call; let it land
            return cast(dict[str, Any], orjson.loads(result_file.read_bytes()))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def check_features(run: Run, n: int) -> str:
    """Compare the features the Quix app attached to its first predictions with Driftline's
    engine on the same events (every event of the topic, in partition order, one run)."""
    msgs = run.messages(run.topics.events, run.count(run.topics.events))
    batch, dead = decode_batch(msgs, "check")
    if dead:
        raise RuntimeError(f"feature check: {len(dead)} events did not decode")
    engine = Engine(fraud_feature_view())
    view = fraud_feature_view()
    raw_inputs = sorted(set(view.passthrough) | {a.source for a in view.aggregations if a.source})
    entities = list(dict.fromkeys(batch.entity_ids))
    row_of = {e: i for i, e in enumerate(entities)}
    order = sorted(range(len(batch)), key=lambda i: (batch.partitions[i], batch.offsets[i]))
    picked = batch.subset(order)
    rows = np.array([row_of[e] for e in picked.entity_ids], dtype=np.int64)
    cols = engine.columns(picked.columns(raw_inputs), len(picked))
    out = engine.run(engine.empty_states(len(entities)), rows, picked.event_times(), cols)
    ours = {e.event_id: i for i, e in enumerate(picked.events)}
    theirs = []
    for m in run.messages(run.sink, run.count(run.sink)):
        value = m.value()
        rec = orjson.loads(value) if value else {}
        if "features" in rec:
            theirs.append(rec)
    if len(theirs) < min(n, len(batch)) - len(out.rejected):
        raise RuntimeError(
            f"feature check: the Quix app sent {len(theirs)} predictions with features, not {n}"
        )
    names = engine.names
    cat = set(engine.pt_categorical)
    bad: list[str] = []
    for rec in theirs:
        i = ours[rec["event_id"]]
        for j, name in enumerate(names):
            other = rec["features"][name]
            if name in cat:
                mine: object = out.categorical[name][i]
                same = mine == other
            else:
                number = mine = float(out.features[i, j])
                same = (other is None and math.isnan(number)) or (
                    other is not None and float(other) == number
                )
            if not same:
                bad.append(f"{rec['event_id']} {name}: driftline {mine!r}, quix {other!r}")
    if bad:
        raise RuntimeError(f"feature check: {len(bad)} features differ, e.g. " + "; ".join(bad[:5]))
    return (
        f"features checked: {len(theirs):,} Quix predictions x {len(names)} features equal to Driftline's "
        f"engine bit for bit"
    )


# ---- 3. end-to-end latency at a fixed rate ---------------------------------------------------
def pct(values: Any, q: float) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def load_and_probe(
    conf: dict[str, Any],
    events_topic: str,
    predictions_topic: str,
    rate: float,
    warmup: float,
    steady: float,
    out: Any,
) -> None:
    """In its own process: send events at `rate`, time each event's prediction arriving.

    Per event: ``sent`` = wall time just before ``producer.produce``; ``made`` = the prediction's
    Kafka timestamp (CreateTime: when the worker produced it, ms); ``arrived`` = when this
    read_committed consumer got it. Reported over the events sent in the steady window.
    """
    total = int(rate * (warmup + steady))
    # Ending now: event time runs ahead of the wall clock, and future events are refused.
    gen = FraudGenerator(seed=7, entities=1000, start_ts=time.time() - total * FraudGenerator.mean_gap_s)
    payloads: list[tuple[str, bytes, bytes]] = []
    for b in gen.batches(total):
        payloads += [(e["event_id"], e["entity_id"].encode(), orjson.dumps(e)) for e in b.event_dicts()]

    consumer = Consumer(
        {
            **conf,
            "group.id": f"{events_topic.rsplit('.', 1)[0]}-probe-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
        }
    )
    meta: Any = consumer.list_topics(predictions_topic, timeout=10).topics[predictions_topic]
    consumer.assign(
        [
            TopicPartition(
                predictions_topic, p, consumer.get_watermark_offsets(TopicPartition(predictions_topic, p))[1]
            )
            for p in meta.partitions
        ]
    )
    consumer.consume(1, timeout=0.5)  # connect and start fetching before the first event

    # The event producer is latency-minded (linger 5 ms), otherwise the project's defaults.
    producer = Producer({**conf, **PRODUCER_DEFAULTS, "linger.ms": 5})
    sent: dict[str, float] = {}
    made: dict[str, float] = {}
    arrived: dict[str, float] = {}
    state: dict[str, float] = {}
    done = threading.Event()

    def produce() -> None:
        step = max(1, round(rate * 0.002))  # send in 2 ms slices
        start = state["start"] = time.time()
        for lo in range(0, total, step):
            delay = start + lo / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            for event_id, key, value in payloads[lo : lo + step]:
                sent[event_id] = time.time()
                producer.produce(events_topic, value, key)
            producer.poll(0)
        state["end"] = time.time()
        producer.flush(30)
        done.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    deadline: float | None = None
    while True:
        # poll() returns as soon as one prediction is there; then take what else is already queued
        # without waiting (consume(n, timeout) would wait for n messages: a measurement delay).
        first = consumer.poll(0.05)
        now = time.time()
        msgs = [first, *consumer.consume(num_messages=1000, timeout=0)] if first is not None else []
        for m in msgs:
            value = m.value()
            if m.error() is None and value is not None:
                rec = orjson.loads(value)
                if rec.get("served") and rec["event_id"] not in arrived:
                    arrived[rec["event_id"]] = now
                    made[rec["event_id"]] = m.timestamp()[1] / 1000
        if done.is_set():
            deadline = deadline or time.time() + 15
            if len(arrived) >= total or time.time() > deadline:
                break
    consumer.close()
    thread.join()

    lo, hi = state["start"] + warmup, state["start"] + warmup + steady
    window = [e for e, t in sent.items() if lo <= t < hi and e in arrived]
    ms = {
        "e2e": [1000 * (arrived[e] - sent[e]) for e in window],
        "to_made": [1000 * (made[e] - sent[e]) for e in window],
        "made_to_arrival": [1000 * (arrived[e] - made[e]) for e in window],
    }
    out.put(
        {
            "offered_rate": len(sent) / (state["end"] - state["start"]),
            "window": [lo, hi],
            "timed": len(window),
            "missing": sum(lo <= t < hi for e, t in sent.items() if e not in arrived),
            **{f"{k}_p50": pct(v, 50) for k, v in ms.items()},
            **{f"{k}_p99": pct(v, 99) for k, v in ms.items()},
            "max": max(ms["e2e"], default=float("nan")),
            # slow events (> 50 ms), and in how many separate 100 ms stretches of send time they lie
            "slow": sum(v > 50 for v in ms["e2e"]),
            # seconds since the window's start
            "slow_stretches": sorted(
                {round(sent[e] - lo, 1) for e, v in zip(window, ms["e2e"], strict=True) if v > 50}
            ),
        }
    )


def latency(
    run: Run,
    batch_size: int,
    rate: float,
    warmup: float,
    steady: float,
    batch_timeout: float = 0.02,
    exactly_once: bool = False,
) -> tuple[Result, str]:
    """(result, a breakdown line) for one worker at batch size `batch_size` under `rate` events/s."""
    group = f"{run.prefix}-lat-b{batch_size}-{uuid.uuid4().hex[:4]}"
    run.commit_at_end(group, run.topics.events)  # only this measurement's events
    cfg = WorkerConfig(
        model=MODEL,
        group_id=group,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        exactly_once=exactly_once,
    )
    worker, timing = timed_worker(run, cfg, target=2**62)
    producer, consumer = Timed(worker.producer, "flush"), Timed(worker.consumer, "commit")
    worker.producer, worker.consumer = cast(Any, producer), cast(Any, consumer)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name="bench-worker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(worker.assigned) < PARTITIONS and not errors:
            if time.monotonic() > deadline:
                raise RuntimeError("latency worker got no partitions within 60s")
            time.sleep(0.1)
        time.sleep(1.0)
        ctx = mp.get_context("spawn")
        results: Any = ctx.Queue()
        proc = ctx.Process(
            target=load_and_probe,
            args=(run.conf, run.topics.events, run.topics.predictions, rate, warmup, steady, results),
        )
        proc.start()
        try:
            give_up = time.monotonic() + warmup + steady + 120
            while True:
                try:
                    res = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    if not proc.is_alive() or time.monotonic() > give_up:
                        raise RuntimeError(
                            f"the latency probe did not report (exit {proc.exitcode})"
                        ) from None
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    finally:
        worker.stop()
        thread.join(60)
    if errors:
        raise RuntimeError(f"latency worker failed: {errors[0]!r}")

    lo, hi = res["window"]

    def steady_ms(samples: list[tuple[float, float]]) -> list[float]:
        return [1000 * d for t, d in samples if lo <= t < hi]

    batches = [(t, d) for t, d in timing.seconds if lo <= t < hi]
    sizes = [size for (t, _), size in zip(timing.seconds, timing.sizes, strict=True) if lo <= t < hi]
    process = steady_ms(batches)
    flush, commit = steady_ms(producer.spent["flush"]), steady_ms(consumer.spent["commit"])
    note = (
        f"offered {res['offered_rate']:,.0f}/s, max {res['max']:.0f} ms; {res['slow']} events over 50 ms, "
        f"sent within {len(res['slow_stretches'])} distinct 100-ms stretches"
    )
    if res["missing"]:
        note += f", {res['missing']} predictions missing"
    mode = "exactly-once" if exactly_once else "at-least-once"
    detail = (
        f"batch {batch_size}, {mode}: event sent -> prediction produced p50 {res['to_made_p50']:.1f} / "
        f"p99 {res['to_made_p99']:.1f} ms; produced -> read p50 {res['made_to_arrival_p50']:.1f} / "
        f"p99 {res['made_to_arrival_p99']:.1f} ms; {len(batches)} batches of {np.mean(sizes or [0]):.0f} "
        f"events, process() p50 {pct(process, 50):.1f} / p99 {pct(process, 99):.1f} ms "
        f"(flush p50 {pct(flush, 50):.1f} / p99 {pct(flush, 99):.1f}, sync commit p50 "
        f"{pct(commit, 50):.1f} / p99 {pct(commit, 99):.1f})"
    )
    if res["slow_stretches"]:
        shown = ", ".join(f"+{t:.1f}s" for t in res["slow_stretches"][:8])
        detail += (
            f"; events over 50 ms were sent at {shown}{' ...' if len(res['slow_stretches']) > 8 else ''}"
        )
    result = Result(
        f"e2e @{rate:,.0f}/s, {mode}, features + detectors",
        batch_size,
        res["timed"],
        steady,
        p50_ms=res["e2e_p50"],
        p99_ms=res["e2e_p99"],
        note=note,
        missing=res["missing"],
    )
    return result, detail


# ---- 3. Faust per-event baseline -------------------------------------------------------------
def faust_throughput(run: Run, n: int, timeout: float, workdir: Path) -> Result:
    result_file = workdir / "faust-result.json"
    env = {
        **os.environ,
        "BENCH_PREFIX": run.prefix,
        "BENCH_APP_ID": f"{run.prefix}-faust",
        "BENCH_SOURCE": run.topics.events,
        "BENCH_SINK": run.sink,
        "BENCH_EXPECT": str(n),
        "BENCH_RESULT": str(result_file),
        "DRIFTLINE_KAFKA_BOOTSTRAP": run.s.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": run.s.redis_url,
    }
    cmd = [sys.executable, str(FAUST_APP), "worker", "-l", "warn"]
    res = run_app(cmd, env, workdir, result_file, workdir / "faust.log", timeout, "Faust baseline")
    secs = float(res["done"]) - float(res["first"])
    return Result(
        "Faust per event: raw features, no aggregates", 1, int(res["count"]), secs,
        note="first event .. N-th prediction flushed (start-up included)", key="faust",
    )  # fmt: skip


# ---- where the worker's time goes ------------------------------------------------------------
def stage_breakdown(run: Run, batch: int, warmup_batches: int) -> tuple[list[tuple[str, float]], float]:
    """Every stage of `Worker.process` on the fresh events of `run`, in batches of `batch`."""
    msgs = run.messages(run.topics.events, run.count(run.topics.events))
    msgs.sort(key=lambda m: (m.timestamp()[1], m.partition(), m.offset()))  # roughly as consumed
    cfg = WorkerConfig(model=MODEL, group_id=f"{run.prefix}-stages", batch_size=batch)
    worker = build_worker(run.s, cfg)
    try:
        scorer = worker.follower.build()
        assert scorer is not None
        worker.scorer = scorer
        if worker.drift is not None:
            worker.drift.set_partitions(range(PARTITIONS))
        batches = [msgs[i : i + batch] for i in range(0, len(msgs), batch)]
        return breakdown(worker, batches, warmup_batches)
    finally:
        worker.consumer.close()
        worker.producer.flush(10)


def cprofile_top(prof: cProfile.Profile, events: int, limit: int = 30) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(limit)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return f"cProfile of the worker thread, {events:,} events, top {limit} by own time:\n" + "\n".join(
        lines[start:]
    )


# ---- report ----------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def table(results: list[Result], quix: Result | None) -> str:
    head = ("#", "configuration", "batch", "events/s", "vs Quix", "p50 ms", "p99 ms", "timed events")
    rows = []
    for k, r in enumerate(results, 1):
        ratio = f"{r.rate / quix.rate:.2f}x" if quix and quix.rate and r.p50_ms is None else "-"
        rows.append(
            (
                str(k),
                r.mode,
                str(r.batch),
                f"{r.rate:,.0f}" if r.p50_ms is None else "-",
                ratio,
                f"{r.p50_ms:.1f}" if r.p50_ms is not None else "-",
                f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-",
                f"{r.events:,}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def fmt(cells: tuple[str, ...]) -> str:
        return " | ".join(
            c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    notes = [f"  {k}: {r.note}" for k, r in enumerate(results, 1) if r.note]
    lines = [fmt(head), "-+-".join("-" * w for w in widths), *(fmt(row) for row in rows)]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    say(f"... {name}")
    started = time.perf_counter()
    yield
    say(f"    done in {time.perf_counter() - started:.1f}s")


def targets(by: dict[str, Result], latencies: list[Result], rate: float) -> list[str]:
    out = []
    full, quix = by.get("full"), by.get("quix")
    if full is not None:
        out.append(
            f"  full worker (fraud view + detectors, batch 1000) >= {TARGET_EVENTS_PER_S:,} events/s: "
            f"{met(full.rate >= TARGET_EVENTS_PER_S)} ({full.rate:,.0f})"
        )
        if quix is not None:
            ratio = full.rate / quix.rate
            out.append(
                f"  >= {TARGET_RATIO:.0f}x Quix Streams in this run: "
                f"{met(ratio >= TARGET_RATIO)} ({ratio:.2f}x)"
            )
        off = by.get("nodet")
        if off is not None:
            cost = 1 - full.rate / off.rate
            out.append(
                f"  detectors cost <= {TARGET_DETECTOR_COST:.0%} of detectors-off throughput: "
                f"{met(cost <= TARGET_DETECTOR_COST)} ({cost:.0%}: {full.rate:,.0f} vs {off.rate:,.0f})"
            )
        eos = by.get("eos")
        if eos is not None:
            share = eos.rate / full.rate
            out.append(
                f"  exactly-once >= {TARGET_EXACTLY_ONCE:.0%} of at-least-once: "
                f"{met(share >= TARGET_EXACTLY_ONCE)} ({share:.0%})"
            )
        cluster = by.get("cluster")
        if cluster is not None:
            cost = 1 - cluster.rate / full.rate
            out.append(
                f"  Redis Cluster costs <= {TARGET_CLUSTER_COST:.0%} per worker: "
                f"{met(cost <= TARGET_CLUSTER_COST)} ({cost:.0%}: {cluster.rate:,.0f} vs {full.rate:,.0f})"
            )
    b100 = by.get("b100")
    if b100 is not None:
        out.append(
            f"  batch 100 >= {TARGET_BATCH_100:,} events/s: "
            f"{met(b100.rate >= TARGET_BATCH_100)} ({b100.rate:,.0f})"
        )
    for r in latencies:
        if r.p99_ms is not None:
            out.append(
                f"  p99 < {TARGET_P99_MS:.0f} ms at {rate:,.0f} events/s, batch {r.batch}, "
                f"{r.mode.split(', ')[1]}: "
                + (  # percentiles of the predictions that came are no latency figure
                    f"NOT MEASURED ({r.missing:,} predictions missing)"
                    if r.missing
                    else f"{met(r.p99_ms < TARGET_P99_MS)} ({r.p99_ms:.1f} ms)"
                )
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=None, help="timed events per configuration (50,000)")
    ap.add_argument(
        "--warmup-events", type=int, default=5_000, help="events per configuration before the clock starts"
    )
    ap.add_argument(
        "--configs",
        default=",".join(c.key for c in CONFIGS) + ",quix",
        help=f"which rows: {', '.join(c.key for c in CONFIGS)}, quix, faust (comma-separated)",
    )
    ap.add_argument("--check", type=int, default=2000, help="Quix predictions whose features are checked")
    ap.add_argument("--rate", type=float, default=5000.0, help="offered rate of the latency test (events/s)")
    ap.add_argument(
        "--batch-timeout", type=float, default=0.02, help="worker batch_timeout in the latency test (0.02 s)"
    )
    ap.add_argument("--warmup", type=float, default=None, help="latency warm-up seconds, not counted (5)")
    ap.add_argument("--steady", type=float, default=None, help="latency measurement seconds (15)")
    ap.add_argument("--quick", action="store_true", help="small numbers, for iterating (20,000 events)")
    ap.add_argument(
        "--profile", action="store_true", help="also cProfile the full worker on a prefix of its own"
    )
    ap.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also the default worker on the local Redis Cluster (`driftline stack up --redis-cluster`)",
    )
    ap.add_argument("--skip-latency", action="store_true", help="no latency test")
    ap.add_argument("--skip-stages", action="store_true", help="no stage breakdown")
    args = ap.parse_args()
    n = args.events or (20_000 if args.quick else 50_000)
    w = args.warmup_events
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    steady = args.steady if args.steady is not None else (6.0 if args.quick else 15.0)
    wanted = [k.strip() for k in args.configs.split(",") if k.strip()]
    known = {c.key: c for c in [*CONFIGS, CLUSTER]}
    cluster_url = None
    if args.redis_cluster:
        cluster_url = LocalStack(Settings(), log=lambda _m: None).redis_cluster_url
        if cluster_url is None:
            ap.error("no local Redis Cluster is up: run `driftline stack up --redis-cluster` first")
        wanted.append(CLUSTER.key)
    unknown = [k for k in wanted if k not in known and k not in ("quix", "faust")]
    if unknown:
        ap.error(f"unknown configurations: {', '.join(unknown)}")

    bench = uuid.uuid4().hex[:8]

    def make(key: str, view: str = "fraud", detectors: bool = True, redis_url: str | None = None) -> Run:
        settings = Settings(
            topic_prefix=f"bench-{bench}-{key}",
            feature_view=view,
            drift_window_seconds=300.0 if detectors else 0.0,
        )
        return Run(settings.model_copy(update={"redis_url": redis_url}) if redis_url else settings)

    runs: dict[str, Run] = {}
    for key in wanted:
        c = known.get(key)
        runs[key] = (
            make(key, c.view, c.detectors, cluster_url if c.redis_cluster else None)
            if c
            else make(key, "fraud" if key == "quix" else "none", False)
        )
    if not args.skip_stages:
        runs["stages"] = make("stages")
    # One prefix per latency configuration too: a second run's events on the first one's entities
    # would be older than their stored state (late: dead-lettered, no prediction to time).
    latency_keys = {
        (eos, b): f"latency-{'eos-' if eos else ''}b{b}" for eos in (False, True) for b in (100, 1000)
    }
    if not args.skip_latency:
        for key in latency_keys.values():
            runs[key] = make(key)
    if args.profile:
        runs["profile"] = make("profile")
    say(
        f"Driftline worker benchmark {bench}: {len(runs)} prefixes bench-{bench}-*, each with the same "
        f"{w:,} warm-up + {n:,} timed events (never seen by any other configuration)"
    )
    results: dict[str, Result] = {}
    latencies: list[Result] = []
    stages: list[tuple[str, float]] = []
    stage_total = 0.0
    details: list[str] = []
    check_note = profile_text = ""
    wall = time.perf_counter()
    load_before = os.getloadavg()
    try:
        with phase("creating topics, training and registering the models"):
            for run in runs.values():
                run.create()
            model = register_models(list(runs.values()), 20_000)
        with phase(f"producing {w + n:,} synthetic events into each of {len(runs)} prefixes"):
            for key, run in runs.items():
                if not key.startswith("latency"):
                    secs = run.produce(w + n)
            say(f"    {(w + n) / secs:,.0f} events/s produced (with their labels)")
        for key in wanted:
            run = runs[key]
            if key == "quix":
                with phase(f"Quix Streams, {w:,} + {n:,} events"), tempfile.TemporaryDirectory() as tmp:
                    r = quix_throughput(
                        run, w + n, w, args.check, timeout=max(300.0, n / 200), workdir=Path(tmp)
                    )
                check_note = check_features(run, args.check)
                say(f"    {check_note}")
            elif key == "faust":
                with (
                    phase(f"Faust per-event baseline, {w + n:,} events"),
                    tempfile.TemporaryDirectory() as tmp,
                ):
                    r = faust_throughput(run, w + n, timeout=max(300.0, n / 250), workdir=Path(tmp))
            else:
                c = known[key]
                with phase(f"{c.label}, batch {c.batch}, {w:,} + {n:,} events"):
                    r = worker_throughput(run, c, w + n, w, timeout=max(180.0, n / 100))
            say(f"    {r.rate:,.0f} events/s")
            results[key] = r
        if not args.skip_latency:
            for eos in (False, True):
                for batch_size in (100, 1000):
                    mode = "exactly-once" if eos else "at-least-once"
                    with phase(f"latency at {args.rate:,.0f} events/s, batch {batch_size}, {mode}"):
                        r, detail = latency(
                            runs[latency_keys[eos, batch_size]],
                            batch_size,
                            args.rate,
                            warmup,
                            steady,
                            args.batch_timeout,
                            eos,
                        )
                        say(f"    p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms ({r.note})")
                        latencies.append(r)
                        details.append(detail)
        if not args.skip_stages:
            with phase("timing every stage of Worker.process on fresh events, batches of 1000"):
                stages, stage_total = stage_breakdown(runs["stages"], 1000, warmup_batches=max(1, w // 1000))
        if args.profile:
            with phase(f"cProfile of the full worker, {w + n:,} events"):
                prof = cProfile.Profile()
                r = worker_throughput(
                    runs["profile"], CONFIGS[0], w + n, w, timeout=max(180.0, n / 50), profile=prof
                )
                profile_text = cprofile_top(prof, w + n)
    finally:
        with phase(f"deleting the bench-{bench}-* topics, groups and keys"):
            for run in runs.values():
                run.close()

    first = next(iter(runs.values()))
    say("")
    say(
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}; "
        f"Python {platform.python_version()}; broker and Redis on this machine ({first.s.kafka_bootstrap}); "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    say(f"models: {model}; topics with {PARTITIONS} partitions")
    say(f"each row: its own prefix and fresh events; the first {w:,} events of each are warm-up, not timed")
    say("")
    print(table([*results.values(), *latencies], results.get("quix")))
    if check_note:
        say(check_note)
    say("")
    say("targets:")
    for line in targets(results, latencies, args.rate):
        say(line)
    if details:
        say("")
        say("latency breakdown (steady window):")
        for detail in details:
            say(f"  {detail}")
    if stages:
        say("")
        say("where Worker.process spends its time, batches of 1000 fresh events (µs per event):")
        for name, us in stages:
            say(f"  {name:<58} {us:8.2f}  {100 * us / stage_total:5.1f}%")
        say(
            f"  {'process() per event, measured':<58} {stage_total:8.2f}  "
            f"-> {1e6 / stage_total:,.0f} events/s"
        )
    if profile_text:
        say("")
        say(profile_text)
    say(f"\ntotal benchmark time {time.perf_counter() - wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
