"""Scaling out: 1, 2 and 4 `driftline worker` processes on one consumer group, total and per worker.

Run on demand against the local stack; not a test::

    driftline stack up --redis-cluster            # or plain `stack up` and --single-redis
    .venv/bin/python benchmarks/worker_scaling.py [--workers 1,2,4] [--events N] [--single-redis]

Each row has its own topic prefix (12 partitions, so 4 workers get 3 each) on the local broker(s)
and the local Redis Cluster (``--single-redis``: the single Redis), into which the same ``W + N``
synthetic fraud events (seed 1, 1,000 cards) are produced before any worker starts. Then the row's
workers start as real processes (``driftline worker``, the defaults users run: feature view
``fraud`` and the drift detectors on, batch 1000, at-least-once). The clock runs from the moment
the group's committed offsets pass ``W`` (start-up, assignment and warm-up excluded) until they
reach ``W + N``; events/s = N / that time. Over the same span it samples the CPU time
(``/proc/<pid>/stat``) of the workers - events per worker CPU second, what one worker core
sustains - and of the broker and Redis processes, printed as their share of the machine's cores;
and, on the Redis servers that serve the workers (the cluster's masters, or the single one), the
commands processed (``INFO stats``: ``total_commands_processed``; a ``MULTI``, an ``EXEC`` and an
``EVALSHA`` count one each) and the CPU per event: one Redis server (one thread) saturates near
1 / that CPU time (the README's sizing rule). The Redis CPU share counts the replicas too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from benchmarks.worker_throughput import Run, register_models, say
from driftline.redis_cluster import is_cluster_url
from driftline.settings import Settings
from driftline.stack import LocalStack

PARTITIONS = 12
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` so far (0 for a pid that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


class CommittedProbe:
    """The group's committed offsets summed over the topic, read through one long-lived client
    (a new consumer per probe would cost this process more CPU than the workers it measures)."""

    def __init__(self, s: Settings, group: str, topic: str) -> None:
        self._c = Consumer({**s.kafka_client_config(), "group.id": group})
        meta = self._c.list_topics(topic, timeout=10).topics[topic]
        self._tps = [TopicPartition(topic, p) for p in meta.partitions]

    def __call__(self) -> int:
        return sum(max(tp.offset, 0) for tp in self._c.committed(self._tps, timeout=10))

    def close(self) -> None:
        self._c.close()


def redis_commands(ports: list[int]) -> int:
    """Commands processed so far, summed over the Redis servers on `ports` (this process's
    own probes are a handful per row, nothing next to a worker's)."""
    total = 0
    for port in ports:
        with redis.Redis(port=port, socket_timeout=5) as r:
            total += int(r.info("stats")["total_commands_processed"])
    return total


def redis_masters(s: Settings, stack: LocalStack) -> tuple[list[int], list[int]]:
    """(ports, pids) of the Redis servers that serve the row's workers: the cluster's masters (a
    replica replays its master's writes, which INFO counts as commands again), or the single one."""
    if not is_cluster_url(s.redis_url):
        pid = stack.redis_pid()
        return [s.redis_host_port[1]], [pid] if pid else []
    ports, pids = [], []
    for node in stack.redis_cluster_nodes():
        with redis.Redis(port=node.port, socket_timeout=5) as r:
            if r.info("replication")["role"] != "master":
                continue
        ports.append(node.port)
        if (pid := stack._redis_node_pid(node)) is not None:
            pids.append(pid)
    return ports, pids


def service_pids(stack: LocalStack) -> tuple[list[int], list[int]]:
    """(the brokers' pids, the Redis servers' pids) of the local stack."""
    brokers = [pid for n in stack.kafka_nodes() if (pid := stack._kafka_node_pid(n)) is not None]
    redis = [pid for n in stack.redis_cluster_nodes() if (pid := stack._redis_node_pid(n)) is not None]
    single = stack.redis_pid()
    return brokers, [*redis, *([single] if single else [])]


def row(s: Settings, workers: int, warmup: int, n: int, stack: LocalStack, log_dir: Path) -> dict[str, float]:
    group = f"{s.topic_prefix}-scale"
    env = {**os.environ, **s.as_env()}
    procs = []
    for i in range(workers):
        log = (log_dir / f"worker-{workers}-{i}.log").open("w")
        cmd = [sys.executable, "-c", "from driftline.cli import main; main()", "worker"]
        cmd += ["--group", group, "--worker-id", f"w{i}"]
        cmd += ["--metrics-port", "0", "--exit-when-idle", "20"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    brokers, redis = service_pids(stack)
    committed = CommittedProbe(s, group, f"{s.topic_prefix}.events")
    try:
        deadline = time.monotonic() + 600
        while (done := committed()) < warmup:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{workers} workers: {done} of {warmup} warm-up events committed")
            time.sleep(0.1)
        ports, master_pids = redis_masters(s, stack)
        m0 = cpu_seconds(master_pids)
        pids = [p.pid for p in procs]
        t0, b0, r0, c0 = time.perf_counter(), cpu_seconds(brokers), cpu_seconds(redis), redis_commands(ports)
        w0 = cpu_seconds(pids)
        while (done := committed()) < warmup + n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers: {done} of {warmup + n} events committed")
            time.sleep(0.1)
        secs = time.perf_counter() - t0
        commands = redis_commands(ports) - c0
        worker_cpu = cpu_seconds(pids) - w0
        cores = os.cpu_count() or 1
        return {
            "rate": n / secs,
            "redis_commands_per_event": commands / (done - warmup),
            # Events per second of worker CPU: the rate one worker core sustains.
            "per_worker_core": (done - warmup) / worker_cpu if worker_cpu > 0 else float("nan"),
            "broker_cpu": (cpu_seconds(brokers) - b0) / secs / cores,
            "redis_cpu": (cpu_seconds(redis) - r0) / secs / cores,
            # Redis's CPU per event: one Redis server (one thread) saturates at ~1 / this.
            "redis_us_per_event": (cpu_seconds(master_pids) - m0) / (done - warmup) * 1e6,
        }
    finally:
        committed.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (1,2,4)")
    ap.add_argument("--events", type=int, default=60_000, help="timed events per row (60,000)")
    ap.add_argument("--warmup-events", type=int, default=6_000, help="events per row before the clock")
    ap.add_argument("--single-redis", action="store_true", help="the single Redis, not the cluster")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--workers: {args.workers!r} is not a comma-separated list of integers")
    stack = LocalStack(Settings(), log=lambda _m: None)
    url = None if args.single_redis else stack.redis_cluster_url
    if not args.single_redis and url is None:
        ap.error("no local Redis Cluster is up: run `driftline stack up --redis-cluster`, or --single-redis")
    bench = uuid.uuid4().hex[:8]
    runs: dict[int, Run] = {}
    for k in counts:
        s = Settings(topic_prefix=f"bench-{bench}-w{k}", partitions=PARTITIONS)
        runs[k] = Run(s.model_copy(update={"redis_url": url}) if url else s)
    w, n = args.warmup_events, args.events
    say(
        f"worker scaling {bench}: {', '.join(map(str, counts))} workers, {w:,} warm-up + {n:,} timed "
        f"events each, {PARTITIONS} partitions, Redis: {'single' if url is None else 'cluster'}, "
        f"{os.cpu_count()} cores"
    )
    results: dict[int, dict[str, float]] = {}
    try:
        for run in runs.values():
            run.create()
        register_models(list(runs.values()), 20_000)
        for run in runs.values():
            run.produce(w + n)
        with tempfile.TemporaryDirectory() as tmp:
            for k, run in runs.items():
                results[k] = row(run.s, k, w, n, stack, Path(tmp))
                r = results[k]
                say(f"    {k} worker(s): {r['rate']:,.0f} events/s")
    finally:
        for run in runs.values():
            run.close()
    cols = ["workers", "events/s total", "per worker", "per worker core", "broker CPU", "Redis CPU"]
    say("\n| " + " | ".join([*cols, "Redis cmds/event", "Redis CPU µs/event"]) + " |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, r in results.items():
        cpu = f"{r['broker_cpu']:.0%} | {r['redis_cpu']:.0%}"
        redis_cost = f"{r['redis_commands_per_event']:.2f} | {r['redis_us_per_event']:.1f}"
        rates = f"{r['rate']:,.0f} | {r['rate'] / k:,.0f} | {r['per_worker_core']:,.0f}"
        say(f"| {k} | {rates} | {cpu} | {redis_cost} |")
    say(
        "(per worker core: events per CPU second the workers used; broker and Redis CPU: share of all"
        " the machine's cores over the timed span)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
