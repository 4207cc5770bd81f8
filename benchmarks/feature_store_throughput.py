"""Throughput of the online feature store, batched, against one Redis round trip per event.

Run on demand against the local Redis (`driftline stack up`); not a test::

    .venv/bin/python benchmarks/feature_store_throughput.py [--events 50000] [--batch-size 1000]

Events come from the synthetic fraud generator (`stream.synthetic`), keyed to 6 partitions by
entity, and go through `fraud_feature_view` (14 raw features, 14 windowed aggregates). Every
run uses its own namespace (``bench-fs-<random>``) and deletes its keys at the end.

* **batched**: per batch, `OnlineStore.write_batch` (two round trips) then
  `get_online_features` for the batch's entities (one round trip). events/s = events / wall time
  of all batches, write and read-back together; also each half on its own.
* **per event, 1 round trip** (the baseline): each event computed by the same engine against
  a state kept in this process (so no read, no fence: generous to the baseline), then one
  pipelined round trip that writes the entity's hash (HSET + PEXPIRE) and reads its latest
  features back. ``--baseline-events`` of them.
* **per event, write_batch of 1**: the store itself with batches of one event (2 + 1 round trips).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis

from driftline.redis_keys import delete_namespace
from feature_store.definitions import fraud_feature_view
from feature_store.engine import Engine
from feature_store.online import OnlineStore
from stream.synthetic import FraudGenerator

PARTITIONS = 6


@dataclass
class Events:
    entity_ids: list[str]
    ts: np.ndarray
    values: dict[str, list[Any]]
    partitions: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_ids)

    def part(self, start: int, stop: int) -> Events:
        return Events(
            self.entity_ids[start:stop],
            self.ts[start:stop],
            {k: v[start:stop] for k, v in self.values.items()},
            self.partitions[start:stop],
            self.offsets[start:stop],
        )

    def batch(self, start: int, stop: int) -> dict[str, object]:
        return {
            "entity_ids": self.entity_ids[start:stop],
            "ts": self.ts[start:stop],
            "values": {k: v[start:stop] for k, v in self.values.items()},
            "partitions": self.partitions[start:stop],
            "offsets": self.offsets[start:stop],
        }


def generate(n: int, entities: int, seed: int) -> Events:
    gen = FraudGenerator(seed=seed, entities=entities, start_ts=1.7e9)
    batch = gen.batch(0, n)
    values: dict[str, list[Any]] = {k: v.tolist() for k, v in {**batch.numeric, **batch.categorical}.items()}
    partitions = np.array([zlib.crc32(e.encode()) % PARTITIONS for e in batch.entity_ids], dtype=np.int64)
    offsets = np.zeros(n, dtype=np.int64)
    for p in range(PARTITIONS):
        idx = np.flatnonzero(partitions == p)
        offsets[idx] = np.arange(len(idx))
    return Events(batch.entity_ids, batch.ts, values, partitions, offsets)


def batched(store: OnlineStore, ev: Events, size: int) -> tuple[float, float, float]:
    """Seconds writing, seconds reading back, events."""
    write = read = 0.0
    n = len(ev.entity_ids)
    for start in range(0, n, size):
        stop = min(n, start + size)
        t0 = time.perf_counter()
        store.write_batch(**ev.batch(start, stop), source="bench")  # type: ignore[arg-type]
        t1 = time.perf_counter()
        store.get_online_features(ev.entity_ids[start:stop])
        t2 = time.perf_counter()
        write += t1 - t0
        read += t2 - t1
    return write, read, n


def per_event_one_round_trip(r: redis.Redis, ns: str, ev: Events, n: int) -> float:
    """Seconds for n events, each computed locally and written + read back in one round trip."""
    view = fraud_feature_view()
    engine = Engine(view)
    states: dict[str, np.ndarray] = {}
    names = engine.names
    ttl = 7 * 86400 * 1000
    t0 = time.perf_counter()
    for i in range(n):
        entity = ev.entity_ids[i]
        state = states.setdefault(entity, engine.empty_states(1))
        cols = engine.columns({k: v[i : i + 1] for k, v in ev.values.items()}, 1)
        out = engine.run(state, np.zeros(1, dtype=np.int64), ev.ts[i : i + 1], cols)
        row = out.features[0]
        key = f"{ns}:fs:{view.name}:entity:{entity}"
        features = orjson.dumps(dict(zip(names, row.tolist(), strict=True)))
        pipe = r.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "state": engine.encode(state[0], [None, None]),
                "latest": row.tobytes(),
                "features": features,
            },
        )
        pipe.pexpire(key, ttl)
        pipe.hget(key, "latest")
        pipe.execute()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--entities", type=int, default=1000)
    ap.add_argument("--baseline-events", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--redis-url", default=os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()

    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    ns = f"bench-fs-{uuid.uuid4().hex[:8]}"
    ev = generate(args.events + args.baseline_events, args.entities, args.seed)
    measured, rest = ev.part(0, args.events), ev.part(args.events, len(ev))
    view = fraud_feature_view()
    base_n, single_n = args.baseline_events, min(args.baseline_events, 1000)
    try:
        store = OnlineStore(r, ns, view)
        batched(
            OnlineStore(r, ns + "-warm", view), generate(2000, args.entities, args.seed + 1), args.batch_size
        )
        write_s, read_s, n = batched(store, measured, args.batch_size)
        base_s = per_event_one_round_trip(r, ns + "-base", rest, base_n)
        single_w, single_r, _ = batched(OnlineStore(r, ns + "-single", view), rest.part(0, single_n), 1)
    finally:
        for prefix in (ns, ns + "-warm", ns + "-base", ns + "-single"):
            delete_namespace(r, prefix)

    batched_rate = n / (write_s + read_s)
    base_rate = base_n / base_s
    single_rate = single_n / (single_w + single_r)
    cpu = platform.processor() or platform.machine()
    print(
        f"fraud_feature_view: {len(view.feature_names())} features, state {store.engine.state_bytes} B/entity"
    )
    print(f"{n:,} events, {args.entities:,} entities, {PARTITIONS} partitions, batches of {args.batch_size}")
    print(f"{cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print()
    print(f"{'mode':44s} {'events/s':>10s} {'vs baseline':>12s}")
    rows = [
        ("batched: write + read back", batched_rate),
        ("batched: write only", n / write_s),
        ("batched: read back only", n / read_s),
        ("per event, 1 round trip (baseline)", base_rate),
        ("per event, write_batch of 1 + read back", single_rate),
    ]
    for label, rate in rows:
        print(f"{label:44s} {rate:>10,.0f} {rate / base_rate:>11.1f}x")
    print()
    ratio = batched_rate / base_rate
    print(
        f"target >= 40,000 events/s written and read back: {'met' if batched_rate >= 40_000 else 'NOT met'}"
    )
    print(f"target >= 10x the per-event baseline: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
