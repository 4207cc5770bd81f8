"""Throughput and end-to-end latency of one Driftline worker, against a per-event Faust baseline.

Run on demand against the local stack (`driftline stack up`); not a test::

    .venv/bin/python benchmarks/worker_throughput.py [--events N] [--quick] [--profile]

Every run uses its own topic prefix (``bench-<random>``): it creates its topics and its model
registry namespace, and deletes both at the end, so it never reads another run's data.

1. **Worker throughput.** ``--events`` synthetic events are produced to ``<prefix>.events``; for
   each batch size (1, 100, 1000) a fresh worker (``build_worker``, fresh consumer group) scores
   them with a logistic-regression model registered as production, until all are committed.
   events/s = events / (start of the first batch .. end of the last commit), taken by wrapping
   ``Worker.process`` of that worker instance. Batch size 1 reads ``--single-events`` of them.
2. **Faust baseline.** ``benchmarks/faust_baseline.py`` (a separate process) scores the same
   events one at a time, writing to ``<prefix>.faust-predictions``; events/s = events / (its
   first event .. its N-th prediction flushed to the broker).
3. **Latency at a fixed rate.** A separate load process sends new events at ``--rate`` events/s
   and reads ``<prefix>.predictions`` (read_committed); latency = arrival of an event's
   prediction - the time its event was handed to the producer (matched by event id). p50/p99
   over ``--steady`` seconds after ``--warmup`` seconds, for batch sizes 100 and 1000 (worker
   ``batch_timeout`` = ``--batch-timeout``, 0.02 s).

Then a table, the targets and where the worker's time goes per event (each stage of a batch timed
on real messages; ``--profile`` adds a cProfile of a batch-1000 run).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import multiprocessing as mp
import os
import platform
import pstats
import queue
import signal
import statistics
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

from driftline.produce import produce_generated
from driftline.settings import Settings
from driftline.wiring import build_worker, model_registry, redis_client
from inference.encoding import encode_features
from inference.metadata import ModelVersion
from stream.decode import decode_batch
from stream.offsets import next_offsets
from stream.outputs import Output
from stream.producer import PRODUCER_DEFAULTS
from stream.synthetic import DriftSchedule, FraudGenerator
from stream.topics import Topics, create_topics, delete_topics
from stream.worker import FeatureColumns, RawFeatures, Worker, WorkerConfig

REPO = Path(__file__).resolve().parents[1]
FAUST_APP = REPO / "benchmarks" / "faust_baseline.py"
MODEL = "fraud"
PARTITIONS = 6
TARGET_EVENTS_PER_S = 30_000
TARGET_RATIO = 3.0
TARGET_P99_MS = 100.0


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

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Timing:
    """Filled in by the wrapper around one worker's ``process``."""

    target: int
    first: float | None = None
    last: float = 0.0
    count: int = 0
    batches: int = 0
    # per batch: (wall-clock start, seconds from the start of process() to its commit), size
    seconds: list[tuple[float, float]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    # CPU between the first batch's start and the target's commit: the worker thread's, the
    # whole process's (incl. librdkafka's threads) and the machine's (incl. the broker), as
    # (at first batch, at target) pairs
    thread_cpu: list[float] = field(default_factory=list)
    process_cpu: list[float] = field(default_factory=list)
    machine: list[tuple[int, int]] = field(default_factory=list)

    def cpu_note(self) -> str:
        if len(self.thread_cpu) < 2 or self.first is None:
            return ""
        wall = self.last - self.first
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
    """One benchmark run: its prefix, topics, registered model; `close` removes all of them."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.prefix = settings.topic_prefix
        self.topics = Topics(self.prefix)
        self.faust_sink = f"{self.prefix}.faust-predictions"
        self.admin = AdminClient(settings.kafka_client_config())
        self.conf = settings.kafka_client_config()
        self.meta: ModelVersion | None = None

    def create(self) -> None:
        create_topics(self.admin, self.topics, partitions=PARTITIONS)
        for future in self.admin.create_topics(
            [NewTopic(self.faust_sink, num_partitions=PARTITIONS, replication_factor=1)]
        ).values():
            future.result()

    def register_model(self, rows: int) -> str:
        """Train and register the model in a child process; returns a one-line description.

        scikit-learn and skl2onnx stay out of this process, so the worker measured here has the
        heap of a real ``driftline worker`` process (their objects would slow its GC pauses).
        """
        ctx = mp.get_context("spawn")
        out: Any = ctx.Queue()
        proc = ctx.Process(target=train_and_register, args=(self.s.model_dump(), rows, out))
        proc.start()
        try:
            res: dict[str, Any] = out.get(timeout=300)
        finally:
            proc.join(30)
        if "error" in res:
            raise RuntimeError(f"training the model failed: {res['error']}")
        self.meta = model_registry(self.s, publish=False).get(MODEL)
        return (
            f"{self.meta.ref}, {res['estimator']} (ONNX), {len(self.meta.features)} features -> "
            f"{sum(f.width for f in self.meta.features)} inputs, holdout AUC {res['auc']:.3f}"
        )

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
        """Delete every topic and consumer group starting with the prefix (incl. Faust's), and the keys."""
        with contextlib.suppress(Exception):
            names = [t for t in self.admin.list_topics(timeout=10).topics if t.startswith(self.prefix)]
            delete_topics(self.admin, names)
        with contextlib.suppress(Exception):
            listed = self.admin.list_consumer_groups(request_timeout=10).result()
            groups = [g.group_id for g in listed.valid if g.group_id.startswith(self.prefix)]
            if groups:
                for future in self.admin.delete_consumer_groups(groups, request_timeout=10).values():
                    with contextlib.suppress(Exception):
                        future.result()
        with contextlib.suppress(Exception):
            r = redis_client(self.s)
            keys = list(r.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                r.delete(*keys)

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


def train_and_register(settings: dict[str, Any], rows: int, out: Any) -> None:
    """In a child process: train logistic regression on synthetic data, register it as production."""
    try:
        from driftline.training_data import synthetic_training_set
        from driftline.wiring import feature_view
        from inference.training import train_model

        s = Settings(**settings)
        data = synthetic_training_set(rows, seed=0, view=feature_view(s))
        t = train_model(
            data.numeric, data.categorical, data.labels, data.ts, estimator="logreg", source="benchmark"
        )
        model_registry(s).register(
            MODEL,
            t.onnx_bytes,
            t.features,
            training=t.training,
            reference=t.reference,
            score_reference=t.score_reference,
            stage="production",
        )
        out.put({"estimator": t.training.estimator, "auc": t.training.metrics.get("auc", float("nan"))})
    except Exception as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


# ---- 1. worker throughput --------------------------------------------------------------------
def timed_worker(run: Run, cfg: WorkerConfig, target: int) -> tuple[Worker, Timing]:
    """A worker whose ``process`` records the first batch start and the last commit's end."""
    worker = build_worker(run.s, cfg)
    timing = Timing(target)
    process = worker.process

    def timed(msgs: list[Message]) -> None:
        wall, started = time.time(), time.perf_counter()
        if timing.first is None:
            timing.first = started
            cpu_marks(timing)
        process(msgs)  # returns once the batch's outputs are acknowledged and offsets committed
        timing.last = time.perf_counter()
        timing.seconds.append((wall, timing.last - started))
        timing.sizes.append(len(msgs))
        timing.count += len(msgs)
        timing.batches += 1
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
    run: Run, batch_size: int, n: int, timeout: float, profile: cProfile.Profile | None = None
) -> Result:
    group = f"{run.prefix}-tput-b{batch_size}-{uuid.uuid4().hex[:4]}"
    cfg = WorkerConfig(
        model=MODEL, group_id=group, batch_size=batch_size, batch_timeout=0.1, exit_when_idle=20
    )
    worker, timing = timed_worker(run, cfg, n)
    before = run.count(run.topics.predictions)
    body: Callable[[], None] = worker.run if profile is None else lambda: profile.runcall(worker.run)
    errors = run_in_thread(body, timeout)
    if errors:
        worker.stop()
        raise RuntimeError(f"worker (batch {batch_size}) failed: {errors[0]!r}")
    if timing.first is None or timing.count < n:
        raise RuntimeError(f"worker (batch {batch_size}) consumed {timing.count} of {n} events")
    consumed = worker.metrics.registry.get_sample_value("driftline_events_consumed_total") or 0
    written = run.count(run.topics.predictions) - before
    if consumed != timing.count or written < timing.count:
        raise RuntimeError(
            f"worker (batch {batch_size}): {timing.count} processed, metrics say {consumed}, "
            f"{written} predictions written"
        )
    return Result(
        "driftline worker",
        batch_size,
        timing.count,
        timing.last - timing.first,
        note=f"{timing.batches} batches; {timing.cpu_note()}",
    )


# ---- 2. Faust baseline -----------------------------------------------------------------------
def faust_throughput(run: Run, n: int, timeout: float, workdir: Path) -> Result:
    result_file = workdir / "faust-result.json"
    log_file = workdir / "faust.log"
    env = {
        **os.environ,
        "BENCH_PREFIX": run.prefix,
        "BENCH_APP_ID": f"{run.prefix}-faust",
        "BENCH_SOURCE": run.topics.events,
        "BENCH_SINK": run.faust_sink,
        "BENCH_EXPECT": str(n),
        "BENCH_RESULT": str(result_file),
        "DRIFTLINE_KAFKA_BOOTSTRAP": run.s.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": run.s.redis_url,
    }
    started = time.monotonic()
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(FAUST_APP), "worker", "-l", "warn"],
            cwd=workdir,  # Faust writes its data directory into the working directory
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while not result_file.exists():
                if proc.poll() is not None:
                    tail = log_file.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"Faust baseline exited with {proc.returncode}:\n{tail}")
                if time.monotonic() - started > timeout:
                    partial = run.count(run.faust_sink)
                    raise RuntimeError(f"Faust baseline: {partial}/{n} predictions after {timeout:.0f}s")
                time.sleep(0.2)
            time.sleep(0.2)  # the file is written in one call; let it land
            res = orjson.loads(result_file.read_bytes())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    written = run.count(run.faust_sink)
    if written < n - 1:  # the n-th prediction may still wait for its event's ack at shutdown
        raise RuntimeError(f"Faust baseline reported {res['count']} events but wrote {written} predictions")
    secs = float(res["done"]) - float(res["first"])
    return Result(
        "faust per-event", 1, int(res["count"]), secs, note="first event .. N-th prediction flushed"
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
    run: Run, batch_size: int, rate: float, warmup: float, steady: float, batch_timeout: float = 0.02
) -> tuple[Result, str]:
    """(result, a breakdown line) for one worker at batch size `batch_size` under `rate` events/s."""
    group = f"{run.prefix}-lat-b{batch_size}-{uuid.uuid4().hex[:4]}"
    run.commit_at_end(group, run.topics.events)  # only this measurement's events
    cfg = WorkerConfig(model=MODEL, group_id=group, batch_size=batch_size, batch_timeout=batch_timeout)
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
    detail = (
        f"batch {batch_size}: event sent -> prediction produced p50 {res['to_made_p50']:.1f} / "
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
        f"e2e @{rate:,.0f}/s, timeout {batch_timeout:g}s",
        batch_size,
        res["timed"],
        steady,
        p50_ms=res["e2e_p50"],
        p99_ms=res["e2e_p99"],
        note=note,
    )
    return result, detail


# ---- where the worker's time goes ------------------------------------------------------------
def fetch_messages(run: Run, n: int) -> list[Message]:
    c = Consumer(
        {**run.conf, "group.id": f"{run.prefix}-sample-{uuid.uuid4().hex[:4]}", "enable.auto.commit": False}
    )
    meta: Any = c.list_topics(run.topics.events, timeout=10).topics[run.topics.events]
    c.assign([TopicPartition(run.topics.events, p, 0) for p in meta.partitions])
    msgs: list[Message] = []
    deadline = time.monotonic() + 30
    while len(msgs) < n and time.monotonic() < deadline:
        msgs += [m for m in c.consume(num_messages=n - len(msgs), timeout=0.5) if m.error() is None]
    c.close()
    return msgs


def per_event_us(fn: Callable[[], object], n: int, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / n * 1e6


def stage_breakdown(run: Run, n: int = 1000) -> list[tuple[str, float]]:
    """Each stage of one worker batch, timed on `n` real messages (µs per event, median of runs)."""
    msgs = fetch_messages(run, n)
    n = len(msgs)
    cfg = WorkerConfig(model=MODEL, group_id=f"{run.prefix}-stages", batch_size=n)
    worker = build_worker(run.s, cfg)
    try:
        scorer = worker.follower.build()
        assert scorer is not None and scorer.deployment.production is not None
        worker.scorer = scorer
        meta = scorer.deployment.production
        session = scorer.sessions[meta.ref]
        names = scorer.feature_names()

        # How fast librdkafka hands over already-fetched messages (a fresh consumer, warmed up).
        c = Consumer({**run.conf, "group.id": f"{run.prefix}-stages-c", "enable.auto.commit": False})
        topic_meta: Any = c.list_topics(run.topics.events, timeout=10).topics[run.topics.events]
        c.assign([TopicPartition(run.topics.events, p, 0) for p in topic_meta.partitions])
        c.consume(num_messages=n, timeout=5.0)
        time.sleep(1.0)  # let the fetcher fill its queue
        calls = []
        for _ in range(7):
            started = time.perf_counter()
            if len(c.consume(num_messages=n, timeout=1.0)) < n:  # the topic ran out
                break
            calls.append((time.perf_counter() - started) / n * 1e6)
        consume_us = statistics.median(calls) if calls else float("nan")

        batch, _ = decode_batch(msgs, "bench")
        columns = RawFeatures().columns(batch, names).columns
        x = encode_features(meta.features, columns, n)
        out = [
            ("consumer.consume (librdkafka -> Message)", consume_us),
            ("decode_batch (pydantic model_validate_json)", per_event_us(lambda: decode_batch(msgs, "b"), n)),
            ("columns (event dicts -> feature lists)", per_event_us(lambda: batch.columns(names), n)),
            ("encode_features", per_event_us(lambda: encode_features(meta.features, columns, n), n)),
            ("ONNX Runtime predict", per_event_us(lambda: session.predict(x), n)),
        ]
        # _predict = score + records + orjson + metrics, into a list of outputs (produced after;
        # the columns are built before _predict now, so they are counted separately):
        predict_no_send = per_event_us(
            lambda: worker._predict(batch, FeatureColumns(columns), time.perf_counter(), []), n
        )
        out.append(
            (
                "prediction dicts + orjson.dumps + metrics",
                predict_no_send - sum(us for name, us in out[3:5]),
            )
        )
        topic = run.topics.predictions
        values = [
            Output(topic, e.entity_id.encode(), orjson.dumps({"event_id": e.event_id, "x": 1}))
            for e in batch.events
        ]

        def produce_all() -> None:
            for out in values:
                worker.outputs.send(out)

        def produce_then_flush() -> None:
            produce_all()
            worker.producer.flush(30)

        produce_us = per_event_us(produce_all, n)
        worker.producer.flush(30)
        out.append(("producer.produce (+ on_delivery)", produce_us))
        out.append(("producer.flush (broker ack wait)", per_event_us(produce_then_flush, n) - produce_us))
        offsets = next_offsets(msgs)
        out.append(
            ("consumer.commit (sync)", per_event_us(lambda: c.commit(offsets=offsets, asynchronous=False), n))
        )
        c.close()
        return out
    finally:
        worker.consumer.close()
        worker.producer.flush(10)


def cprofile_top(prof: cProfile.Profile, events: int, limit: int = 22) -> str:
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


def table(results: list[Result], faust: Result | None) -> str:
    head = ("#", "mode", "batch", "events/s", "ratio vs Faust", "p50 ms", "p99 ms", "events")
    rows = []
    for k, r in enumerate(results, 1):
        ratio = f"{r.rate / faust.rate:.2f}x" if faust and faust.rate and r.p50_ms is None else "-"
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=None, help="events for batch 100/1000 and Faust (100,000)")
    ap.add_argument("--single-events", type=int, default=None, help="events for batch size 1 (10,000)")
    ap.add_argument("--rate", type=float, default=5000.0, help="offered rate of the latency test (events/s)")
    ap.add_argument(
        "--batch-timeout", type=float, default=0.02, help="worker batch_timeout in the latency test (0.02 s)"
    )
    ap.add_argument("--warmup", type=float, default=None, help="latency warm-up seconds, not counted (5)")
    ap.add_argument("--steady", type=float, default=None, help="latency measurement seconds (20)")
    ap.add_argument("--quick", action="store_true", help="small numbers, for iterating (20,000 events)")
    ap.add_argument(
        "--feature-view",
        default="none",
        help="'none': raw event features (the Faust baseline's inputs); 'fraud': online feature store",
    )
    ap.add_argument(
        "--drift-window-seconds",
        type=float,
        default=300.0,
        help="event-time seconds per merged drift window (the generator makes 2 events/s); 0 = detectors off",
    )
    ap.add_argument("--profile", action="store_true", help="also cProfile a batch-1000 worker run")
    ap.add_argument("--skip-faust", action="store_true", help="no Faust baseline")
    ap.add_argument("--skip-latency", action="store_true", help="no latency test")
    args = ap.parse_args()
    n = args.events or (20_000 if args.quick else 100_000)
    n_single = min(n, args.single_events or (1_000 if args.quick else 10_000))
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    steady = args.steady if args.steady is not None else (6.0 if args.quick else 20.0)

    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    run = Run(
        Settings(
            topic_prefix=prefix,
            feature_view=args.feature_view,
            drift_window_seconds=args.drift_window_seconds,
        )
    )
    say(f"Driftline worker benchmark, prefix {prefix}, {n:,} events ({n_single:,} for batch 1)")
    results: list[Result] = []
    faust: Result | None = None
    stages: list[tuple[str, float]] = []
    details: list[str] = []
    profile_text = ""
    wall = time.perf_counter()
    load_before = os.getloadavg()
    try:
        with phase("creating topics, training and registering the model"):
            run.create()
            model = run.register_model(20_000)
        with phase(f"producing {n:,} synthetic events"):
            secs = run.produce(n)
            say(f"    {n / secs:,.0f} events/s produced (with their labels)")
        for batch_size, count in ((1, n_single), (100, n), (1000, n)):
            with phase(f"worker, batch {batch_size}, {count:,} events"):
                r = worker_throughput(run, batch_size, count, timeout=max(120.0, count / 100))
                say(f"    {r.rate:,.0f} events/s")
                results.append(r)
        if not args.skip_faust:
            with phase(f"Faust per-event baseline, {n:,} events"), tempfile.TemporaryDirectory() as tmp:
                faust = faust_throughput(run, n, timeout=max(180.0, n / 250), workdir=Path(tmp))
                say(f"    {faust.rate:,.0f} events/s")
        if not args.skip_latency:
            for batch_size in (100, 1000):
                label = (
                    f"latency at {args.rate:,.0f} events/s, batch {batch_size}, timeout {args.batch_timeout}s"
                )
                with phase(label):
                    r, detail = latency(run, batch_size, args.rate, warmup, steady, args.batch_timeout)
                    say(f"    p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms ({r.note})")
                    results.append(r)
                    details.append(detail)
        best = max((r for r in results if r.p50_ms is None and r.batch > 1), key=lambda r: r.rate)
        with phase("timing the stages of one 1000-event batch"):
            stages = stage_breakdown(run)
        if args.profile:
            with phase(f"cProfile of a batch-1000 worker run, {n:,} events"):
                prof = cProfile.Profile()
                r = worker_throughput(run, 1000, n, timeout=max(120.0, n / 100), profile=prof)
                profile_text = cprofile_top(prof, r.events)
    finally:
        with phase(f"deleting {prefix}.* topics and registry keys"):
            run.close()

    say("")
    say(
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}; "
        f"Python {platform.python_version()}; broker on this machine ({run.s.kafka_bootstrap}); "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    say(f"model: {model}; topics with {PARTITIONS} partitions")
    say("")
    print(table(results + ([faust] if faust else []), faust))
    say("")
    say("targets:")
    say(f"  one worker >= {TARGET_EVENTS_PER_S:,} events/s: {met(best.rate >= TARGET_EVENTS_PER_S)} "
        f"({best.rate:,.0f} events/s at batch {best.batch})")  # fmt: skip
    if faust:
        ratio = best.rate / faust.rate
        verdict = met(ratio >= TARGET_RATIO)
        say(f"  >= {TARGET_RATIO:.0f}x the Faust per-event baseline: {verdict} ({ratio:.2f}x)")
    for r in results:
        if r.p99_ms is not None:
            say(
                f"  p99 < {TARGET_P99_MS:.0f} ms at {args.rate:,.0f} events/s, batch {r.batch}: "
                f"{met(r.p99_ms < TARGET_P99_MS)} ({r.p99_ms:.1f} ms)"
            )
    if details:
        say("")
        say("latency breakdown (steady window):")
        for detail in details:
            say(f"  {detail}")
    if stages:
        say("")
        say("where one batch of 1000 spends its time (µs per event; stages timed separately):")
        total = sum(us for _, us in stages)
        for name, us in stages:
            say(f"  {name:<45} {us:7.2f}  {100 * us / total:5.1f}%")
        say(f"  {'sum':<45} {total:7.2f}  -> at most {1e6 / total:,.0f} events/s on one core")
    if profile_text:
        say("")
        say(profile_text)
    say(f"\ntotal benchmark time {time.perf_counter() - wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
