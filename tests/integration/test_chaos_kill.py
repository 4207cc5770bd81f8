"""Chaos: SIGKILL of a `driftline worker` subprocess at 5 random points of its batches (seeded),
restarted each time: nothing lost, no aggregate double-counted, and each kill provably hit a
worker with work in progress (it had committed a batch, and events were still uncommitted)."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from driftline.settings import Settings
from stream.offsets import end_offsets
from stream.topics import Topics
from tests.integration.chaos_support import count_24h_mismatches, produce_all, valid_events
from tests.integration.test_worker import _spawn_worker
from tests.integration.worker_support import (
    predictions,
    register,
    served_counts,
    stop_when_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

KILLS = 5


def _committed(s: Settings, probe: Consumer) -> int:
    """Events the worker group has committed, over all partitions (-1001: none yet -> 0)."""
    ends = end_offsets(probe, Topics(s.topic_prefix).events)
    done = probe.committed([TopicPartition(tp.topic, tp.partition) for tp in ends], timeout=10)
    return sum(max(tp.offset, 0) for tp in done)


@pytest.mark.slow
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_sigkill_at_random_points_of_batches_loses_and_double_counts_nothing(
    own_settings: Settings, exactly_once: bool
) -> None:
    s = own_settings
    topics = Topics(s.topic_prefix)
    register(s)
    n = 20_000
    valid = valid_events(n, seed=7)
    produce_all(s, topics.events, [(e.encode(), v) for e, v in valid])  # a backlog: always work to do
    rng = random.Random(20261204)
    extra = ["--batch-size", "200", "--worker-id", "w1", *(["--exactly-once"] if exactly_once else [])]
    # read_uncommitted: the probe's offset fetch then does not wait for a killed worker's pending
    # transaction to be aborted (read_committed asks the broker for stable offsets only, which can
    # outlast the fetch's timeout); the offsets it returns are the committed ones all the same.
    probe = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": f"{s.topic_prefix}-worker",
            "isolation.level": "read_uncommitted",
        }
    )
    kills = []
    try:
        for k in range(KILLS):
            before = _committed(s, probe)
            worker = _spawn_worker(s, *extra)
            # Kill it once it committed a random 5-35% of what is left (a fixed delay could
            # outlast the backlog: a kill that interrupts nothing), a random few ms into its
            # next batch.
            target = before + max(1, int(rng.uniform(0.05, 0.35) * (n - before)))
            wait_until(
                lambda w=worker, t=target: _committed(s, probe) >= t or w.poll() is not None, 120, 0.01
            )
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            time.sleep(rng.uniform(0.0, 0.02))
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            at_kill = _committed(s, probe)
            kills.append((k, at_kill - before, n - at_kill))
            assert at_kill > before, "the kill came before any batch was committed"
            assert at_kill < n, "the kill came after everything was committed: it interrupted nothing"
        rc, err = stop_when_committed(s, _spawn_worker(s, *extra), timeout=300)
        assert rc == 0, err
    finally:
        probe.close()
    print(f"\nkills (index, events committed by that run, uncommitted at the kill): {kills}")

    counts = served_counts(predictions(s, n))
    ids = {orjson.loads(v)["event_id"] for _, v in valid}
    assert set(counts) == ids, f"{len(ids - set(counts))} events lost"
    duplicates = sum(c - 1 for c in counts.values())
    print(f"{'exactly' if exactly_once else 'at-least'}-once: {duplicates} duplicate predictions")
    if exactly_once:
        assert duplicates == 0
    assert count_24h_mismatches(s, Counter(e for e, _ in valid)) == {}
