"""Soak: memory of the worker, the outcome joiner and the retrainer under a steady stream.

Run on demand; not a test::

    .venv/bin/python benchmarks/soak.py [--rate 5000] [--minutes 30] [--warmup-minutes 5] [--shared]

By default it starts its own broker and redis-server (`tests.private_stack.PrivateStack`, free
ports, a temporary directory, removed at the end), so Redis ``used_memory`` is the soak's data
alone; ``--shared`` uses the configured stack (`driftline stack up`) instead, where other users'
keys count too. It uses its own topic prefix (``soak-<random>``): creates its topics, trains and
registers a production model, and starts as child processes ``driftline worker``, ``driftline outcomes``,
``driftline retrainer`` and ``driftline produce --synthetic fraud`` (``--rate`` events/s for
``--minutes``, labels ``--label-delay`` events late). Half-way through the warm-up, then every
``--retrain-every`` minutes, it sends ``driftline retrain fraud`` (a manual trigger: the job
replays the whole events topic, keeps its newest labeled rows and, if the candidate is no worse
than production, registers it and starts its canary, which the rollout agent then decides on).

Every ``--sample-seconds`` (30) it samples each child's RSS (``/proc/<pid>/status``; "job" is
the retrainer's retrain job, a child process of its own while one runs), Redis ``used_memory``
and key count, and the worker's lag (events produced minus committed by its group), and prints
a row. At the end: each process's growth from its first sample after ``--warmup-minutes`` to its
last (target: at most 10%), the loop's steps from ``<prefix>.models``, Redis's memory by key
family (estimated from a random sample of keys, with the share that expires: data kept by
design, each family with its TTL, apart from anything that would stay for good), and the
prefix's topics and Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.demo import Children, settings_env
from driftline.redis_keys import RedisClient, delete_namespace
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import feature_view, model_registry, redis_client
from inference.training import register_trained, train_model
from stream.event_log import read_messages
from stream.offsets import end_offsets
from stream.topics import Topics, create_topics, delete_topics
from tests.private_stack import PrivateStack

TARGET_GROWTH = 0.10
SERVICES = ("worker", "outcomes", "retrainer")


@dataclass
class Sample:
    t: float  # seconds since start
    rss_mb: dict[str, float]
    redis_mb: float
    redis_keys: int
    produced: int | None  # events on the events topic
    lag: int | None  # of them, not committed by the worker yet


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children_rss_mb(pid: int) -> float:
    """RSS of a process's children (the retrainer's job while one runs), MB."""
    kids: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # per thread: the job's is an executor thread
        with contextlib.suppress(FileNotFoundError):
            kids += (task / "children").read_text().split()
    return sum(rss_mb(int(k)) for k in kids)


def family(key: bytes, prefix: str) -> str:
    """A key's family: the segment after the prefix (two for the join state's keys)."""
    # A hash-tagged key starts with "{<prefix>" (driftline.redis_keys).
    parts = key.decode(errors="replace").removeprefix("{").removeprefix(f"{prefix}:").split(":")
    return ":".join(parts[:2]) if parts[0] == "join" and len(parts) > 1 else parts[0]


def redis_families(r: RedisClient, prefix: str, n: int = 2000) -> dict[str, tuple[float, float, float]]:
    """Per key family, estimated from `n` random keys: (keys, MB, mean TTL in s; -1: none)."""
    total = int(r.dbsize())
    if not total:
        return {}
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.randomkey()
    keys = [k for k in pipe.execute() if k is not None]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
        pipe.ttl(k)
    replies = pipe.execute()
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0])  # count, bytes, ttl sum, no-ttl
    for i, k in enumerate(keys):
        size, ttl = replies[2 * i] or 0, replies[2 * i + 1]
        a = acc[family(k, prefix)]
        a[0] += 1
        a[1] += size
        if ttl >= 0:
            a[2] += ttl
        else:
            a[3] += 1
    scale = total / len(keys)
    out = {}
    for fam, (count, size, ttl_sum, no_ttl) in acc.items():
        with_ttl = count - no_ttl
        out[fam] = (count * scale, size * scale / 2**20, -1.0 if no_ttl else ttl_sum / with_ttl)
    return out


@contextlib.contextmanager
def stack(shared: bool) -> Iterator[Settings]:
    """The settings of the stack to soak on: a private one (stopped after), or the configured one."""
    if shared:
        yield Settings()
        return
    with tempfile.TemporaryDirectory(prefix="driftline-soak-stack-") as d, PrivateStack(Path(d)) as ps:
        yield ps.settings


def worker_lag(s: Settings, reader: Consumer) -> tuple[int | None, int | None]:
    """(events produced, of them not committed by the worker yet); None when the broker is busy."""
    topic = Topics(s.topic_prefix).events
    try:
        ends = end_offsets(reader, topic)
        committed = reader.committed([TopicPartition(topic, tp.partition) for tp in ends], timeout=10)
    except Exception:  # a busy broker: this sample has no lag figure
        return None, None
    done = {tp.partition: max(tp.offset, 0) for tp in committed}
    return sum(tp.offset for tp in ends), sum(tp.offset - done.get(tp.partition, 0) for tp in ends)


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
    delete_namespace(redis_client(s), prefix, count=5000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="growth is measured after it")
    ap.add_argument("--sample-seconds", type=float, default=30.0)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--label-delay", type=int, default=200, help="labels sent N events late")
    ap.add_argument("--retrain-every", type=float, default=5.0, help="minutes between manual retrains")
    ap.add_argument("--shared", action="store_true", help="use the configured stack, not a private one")
    ap.add_argument("--keep", action="store_true", help="keep the topics and Redis keys (--shared)")
    args = ap.parse_args()
    with stack(args.shared) as base:
        soak(args, base)


def soak(args: argparse.Namespace, base: Settings) -> None:
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
    where = "shared stack" if args.shared else f"private stack: kafka {s.kafka_bootstrap}, {s.redis_url}"
    print(f"prefix {s.topic_prefix} on the {where}; logs in {logs}", flush=True)
    create_topics(AdminClient(s.kafka_client_config()), topics, s.partitions)
    data = synthetic_training_set(10_000, seed=0, view=feature_view(s))
    trained = train_model(data.numeric, data.categorical, data.labels, data.ts, source="soak")
    print(f"registered {register_trained(model_registry(s), 'fraud', trained, 'production').ref}", flush=True)

    children = Children(s)
    n = int(args.rate * args.minutes * 60)
    children.start("worker", "worker", "--batch-size", "1000")
    children.start("outcomes", "outcomes")
    children.start("retrainer", "retrainer", "--log-level", "info")
    children.start(
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
    names = [*SERVICES, "job", "produce"]
    print(
        f"{'t (min)':>8} "
        + " ".join(f"{n + ' MB':>13}" for n in names)
        + f" {'redis MB':>9} {'redis keys':>11} {'lag':>9}"
    )
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
            rss = {name: rss_mb(p.pid) for name, p in children.procs.items()}
            rss["job"] = children_rss_mb(children.procs["retrainer"].pid)
            redis_mb = int(r.info("memory")["used_memory"]) / 2**20
            sample = Sample(t, rss, redis_mb, int(r.dbsize()), *worker_lag(s, reader))
            samples.append(sample)
            cells = " ".join(f"{rss.get(n, 0):>13.1f}" for n in names)
            lag = "-" if sample.lag is None else f"{sample.lag:,}"
            print(f"{t / 60:>8.1f} {cells} {redis_mb:>9.1f} {sample.redis_keys:>11,} {lag:>9}", flush=True)
            dead = [name for name in SERVICES if children.procs[name].poll() is not None]
            if dead:
                print(f"died: {', '.join(dead)} (see {logs})", flush=True)
                break
            if t >= args.minutes * 60 and children.procs["produce"].poll() is not None:
                break
            time.sleep(max(0.0, args.sample_seconds - (time.monotonic() - started - t)))
    finally:
        children.stop()
        reader.close()
        report(args, s, samples, r)
        if args.shared and not args.keep:
            cleanup(s)


def report(args: argparse.Namespace, s: Settings, samples: list[Sample], r: RedisClient) -> None:
    """The loop's steps, each process's growth after the warm-up, and Redis's data by family."""
    steps = Counter(
        orjson.loads(m.value() or b"{}").get("kind")
        for m in read_messages(s.kafka_client_config(), Topics(s.topic_prefix).models)
    )
    print("\nloop steps on the models topic:", dict(steps))
    counted = [x for x in samples if x.produced is not None and x.lag is not None and x.t > 0]
    if counted:
        x = counted[-1]
        assert x.produced is not None and x.lag is not None
        print(
            f"in {x.t / 60:.1f} min: {x.produced:,} events produced ({x.produced / x.t:,.0f}/s, asked "
            f"{args.rate:,.0f}/s), {x.produced - x.lag:,} scored and committed by the worker "
            f"({(x.produced - x.lag) / x.t:,.0f}/s), lag {x.lag:,}"
        )
    warmup = args.warmup_minutes * 60
    first = args.warmup_minutes
    print(f"\nprocess RSS growth after the first {first:g} min (first sample after it -> last):")
    for name in SERVICES:
        g = growth(samples, name, warmup)
        ok = "ok" if g is not None and g <= TARGET_GROWTH else "OVER 10%"
        verdict = "n/a (too few samples)" if g is None else f"{g:+.1%} {ok}"
        kept = [x.rss_mb[name] for x in samples if x.t >= warmup and x.rss_mb.get(name)]
        span = f" ({kept[0]:.0f} -> {kept[-1]:.0f} MB, max {max(kept):.0f})" if kept else ""
        print(f"  {name:<10} {verdict}{span}")
    jobs = [x.rss_mb["job"] for x in samples if x.rss_mb.get("job")]
    if jobs:
        print(f"  {'job':<10} a child process per retrain job: peak {max(jobs):.0f} MB, returned at its exit")
    after = [x for x in samples if x.t >= warmup]
    if len(after) >= 2:
        a, b = after[0], after[-1]
        shared = " (shared: other users' keys too)" if args.shared else ""
        print(
            f"\nredis used_memory (data, not a process): {a.redis_mb:.1f} -> {b.redis_mb:.1f} MB "
            f"({(b.redis_mb - a.redis_mb) / a.redis_mb:+.1%}), "
            f"keys {a.redis_keys:,} -> {b.redis_keys:,}{shared}"
        )
    families = redis_families(r, s.topic_prefix)
    if families:
        print("redis data by key family at the end (estimated from 2,000 random keys):")
        print(f"  {'family':<16} {'keys':>11} {'MB':>9} {'mean TTL':>10}")
        for fam, (keys, mb, ttl) in sorted(families.items(), key=lambda kv: -kv[1][1]):
            print(f"  {fam:<16} {keys:>11,.0f} {mb:>9.1f} {'none' if ttl < 0 else f'{ttl:,.0f} s':>10}")


if __name__ == "__main__":
    main()
