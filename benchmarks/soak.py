"""Soak: memory of the worker, the outcome joiner and the retrainer under a steady stream.

Run on demand against the local stack (`driftline stack up`); not a test::

    .venv/bin/python benchmarks/soak.py [--rate 5000] [--minutes 30] [--warmup-minutes 5]

It uses its own topic prefix (``soak-<random>``): creates its topics, trains and registers a
production model, and starts as child processes ``driftline worker``, ``driftline outcomes``,
``driftline retrainer`` and ``driftline produce --synthetic fraud`` (``--rate`` events/s for
``--minutes``, labels ``--label-delay`` events late). Half-way through the warm-up, then every
``--retrain-every`` minutes, it sends ``driftline retrain fraud`` (a manual trigger: the job
replays the whole events topic, keeps its newest labeled rows and, if the candidate is no worse
than production, registers it and starts its canary, which the rollout agent then decides on).

Every ``--sample-seconds`` (30) it samples each child's RSS (``/proc/<pid>/status``), Redis
``used_memory`` (the shared Redis: other users' keys count too) and the worker's lag (events
produced minus committed by its group), and prints a row. At the end: each process's growth
from its first sample after ``--warmup-minutes`` to its last (target: at most 10%), the loop's
steps from ``<prefix>.models``, and the prefix's topics and Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.demo import Children, settings_env
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import feature_view, model_registry, redis_client
from inference.training import register_trained, train_model
from stream.event_log import read_messages
from stream.offsets import end_offsets
from stream.topics import Topics, create_topics, delete_topics

TARGET_GROWTH = 0.10
SERVICES = ("worker", "outcomes", "retrainer")


@dataclass
class Sample:
    t: float  # seconds since start
    rss_mb: dict[str, float]
    redis_mb: float
    lag: int | None


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def worker_lag(s: Settings, reader: Consumer) -> int | None:
    topic = Topics(s.topic_prefix).events
    try:
        ends = end_offsets(reader, topic)
        committed = reader.committed([TopicPartition(topic, tp.partition) for tp in ends], timeout=10)
    except Exception:  # a busy broker: this sample has no lag figure
        return None
    done = {tp.partition: max(tp.offset, 0) for tp in committed}
    return sum(tp.offset - done.get(tp.partition, 0) for tp in ends)


def growth(samples: list[Sample], name: str, warmup_s: float) -> float | None:
    after = [x for x in samples if x.t >= warmup_s and x.rss_mb.get(name)]
    if len(after) < 2:
        return None
    first, last = after[0].rss_mb[name], after[-1].rss_mb[name]
    return (last - first) / first


def cleanup(s: Settings) -> None:
    admin = AdminClient(s.kafka_client_config())
    prefix = s.topic_prefix
    faust_topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{prefix}-")]
    delete_topics(admin, [*Topics(prefix).all(), *faust_topics])
    r = redis_client(s)
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            r.delete(*batch)
            batch.clear()
    if batch:
        r.delete(*batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="growth is measured after it")
    ap.add_argument("--sample-seconds", type=float, default=30.0)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--label-delay", type=int, default=200, help="labels sent N events late")
    ap.add_argument("--retrain-every", type=float, default=5.0, help="minutes between manual retrains")
    ap.add_argument("--keep", action="store_true", help="keep the topics and Redis keys")
    args = ap.parse_args()

    base = Settings()
    s = base.model_copy(
        update={
            "topic_prefix": f"soak-{uuid.uuid4().hex[:8]}",
            "metrics_port": 0,
            "retrain_recent_rows": 20_000,
            "rollout_min_outcomes": 300,
        }
    )
    logs = Path(tempfile.mkdtemp(prefix="driftline-soak-"))
    s = s.model_copy(update={"stack_dir": logs})  # the children's logs: <logs>/demo-<name>.log
    topics = Topics(s.topic_prefix)
    print(f"prefix {s.topic_prefix}; logs in {logs}", flush=True)
    create_topics(AdminClient(s.kafka_client_config()), topics, s.partitions)
    data = synthetic_training_set(10_000, seed=0, view=feature_view(s))
    trained = train_model(data.numeric, data.categorical, data.labels, data.ts, source="soak")
    print(f"registered {register_trained(model_registry(s), 'fraud', trained, 'production').ref}", flush=True)

    soak = Children(s)
    n = int(args.rate * args.minutes * 60)
    soak.start("worker", "worker", "--batch-size", "1000")
    soak.start("outcomes", "outcomes")
    soak.start("retrainer", "retrainer", "--log-level", "info")
    soak.start(
        "produce",
        *("produce", "--synthetic", "fraud", "--n", str(n), "--rate", str(args.rate)),
        *("--entities", str(args.entities), "--label-delay", str(args.label_delay)),
        *("--start-ts", "2026-01-01T00:00:00"),
    )
    reader = Consumer({**s.kafka_client_config(), "group.id": f"{s.topic_prefix}-worker"})
    r = redis_client(s)
    samples: list[Sample] = []
    started = time.monotonic()
    # The first job inside the warm-up: its imports (scikit-learn, skl2onnx) are a one-off step.
    next_retrain = min(args.retrain_every, args.warmup_minutes / 2) * 60
    names = [*SERVICES, "produce"]
    print(f"{'t (min)':>8} " + " ".join(f"{n + ' MB':>13}" for n in names) + f" {'redis MB':>9} {'lag':>9}")
    try:
        while True:
            t = time.monotonic() - started
            if t >= next_retrain and t < args.minutes * 60:
                subprocess.run(
                    [sys.executable, "-c", "from driftline.cli import main; main()", "retrain", "fraud"],
                    env={**os.environ, **settings_env(s)},
                    capture_output=True,
                    check=False,
                )
                next_retrain += args.retrain_every * 60
            rss = {name: rss_mb(p.pid) for name, p in soak.procs.items()}
            redis_mb = int(r.info("memory")["used_memory"]) / 2**20
            sample = Sample(t, rss, redis_mb, worker_lag(s, reader))
            samples.append(sample)
            cells = " ".join(f"{rss.get(n, 0):>13.1f}" for n in names)
            lag = "-" if sample.lag is None else f"{sample.lag:,}"
            print(f"{t / 60:>8.1f} {cells} {redis_mb:>9.1f} {lag:>9}", flush=True)
            dead = [name for name in SERVICES if soak.procs[name].poll() is not None]
            if dead:
                print(f"died: {', '.join(dead)} (see {logs})", flush=True)
                break
            if t >= args.minutes * 60 and soak.procs["produce"].poll() is not None:
                break
            time.sleep(max(0.0, args.sample_seconds - (time.monotonic() - started - t)))
    finally:
        soak.stop()
        reader.close()
        steps = Counter(
            orjson.loads(m.value() or b"{}").get("kind")
            for m in read_messages(s.kafka_client_config(), topics.models)
        )
        print("\nloop steps on the models topic:", dict(steps))
        warmup = args.warmup_minutes * 60
        print(f"\ngrowth after the first {args.warmup_minutes:g} min (first sample after it -> last):")
        for name in SERVICES:
            g = growth(samples, name, warmup)
            verdict = (
                "n/a (too few samples)"
                if g is None
                else f"{g:+.1%} " + ("ok" if g <= TARGET_GROWTH else "OVER 10%")
            )
            print(f"  {name:<10} {verdict}")
        after = [x.redis_mb for x in samples if x.t >= warmup]
        if len(after) >= 2:
            print(f"  {'redis':<10} {(after[-1] - after[0]) / after[0]:+.1%} (shared: other users' keys too)")
        if not args.keep:
            cleanup(s)


if __name__ == "__main__":
    main()
