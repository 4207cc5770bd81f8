"""Chaos: SIGKILL of a `driftline outcomes` subprocess at 3 random points of its batches (seeded),
restarted each time, over 20,000 scored and labeled events: every pair is joined, each outcome
id is one same outcome however often it was produced, and a joiner-side double count is bounded
by the work in flight at the kills.

The joiner commits each batch in a Kafka transaction, but its join state lives in Redis, outside
the transaction: a killed batch's writes stay, so its replay can meet a half that a later batch
meets again. That is why outcomes carry a deterministic ``id`` and their consumers (the
retrainer's rollout counts) count each id once; this test measures how many such repeats the
kills make and bounds them by a batch per kill.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from driftline.settings import Settings
from stream.topics import Topics
from tests.helpers import committed_total, consume_all
from tests.integration.chaos_support import spawn_cli
from tests.integration.test_worker import _spawn_worker
from tests.integration.worker_support import predictions, produce_events, register, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 20_000
KILLS = 3
BATCH = 1000  # the joiner's JoinConfig.batch_size (the CLI's default)


def _joined(s: Settings) -> int:
    """Predictions and labels the joiner group has committed."""
    t = Topics(s.topic_prefix)
    group = f"{s.topic_prefix}-outcomes"
    return committed_total(s, group, t.predictions) + committed_total(s, group, t.labels)


def test_sigkill_of_the_joiner_joins_every_pair_and_repeats_only_what_was_in_flight(
    own_settings: Settings, tmp_path: Path
) -> None:
    s = own_settings.model_copy(update={"drift_window_seconds": 0.0})
    topics = Topics(s.topic_prefix)
    register(s)
    produce_events(s, EVENTS, seed=11)  # events and, 10 events later each, its label
    scorer = _spawn_worker(s, "--exit-when-idle", "5")
    _, err = scorer.communicate(timeout=600)
    assert scorer.returncode == 0, err
    preds = predictions(s, EVENTS)
    expected = {f"{p['event_id']}:fraud:1:production" for p in preds if p["served"]}
    assert len(expected) == EVENTS
    total = 2 * EVENTS  # the joiner's input: a backlog of predictions and labels

    log = tmp_path / "outcomes.log"
    rng = random.Random(20261205)
    kills = []
    for _ in range(KILLS):
        before = _joined(s)
        joiner = spawn_cli(s, log, "outcomes", "--metrics-port", "0")
        # Let this run commit at least one batch, then kill it at a random moment after that.
        wait_until(lambda j=joiner, b=before: _joined(s) > b or j.poll() is not None, 180, 0.05)
        assert joiner.poll() is None, log.read_text()[-3000:]
        time.sleep(rng.uniform(0.0, 0.5))
        joiner.send_signal(signal.SIGKILL)
        joiner.wait(10)
        at_kill = _joined(s)
        kills.append(at_kill - before)
        assert at_kill < total, "the kill came after everything was joined: it interrupted nothing"
    last = spawn_cli(s, log, "outcomes", "--metrics-port", "0", "--exit-when-idle", "10")
    assert last.wait(600) == 0, log.read_text()[-3000:]
    assert _joined(s) == total

    outcomes = [r.json() for r in consume_all(s, topics.outcomes, EVENTS, timeout=180)]  # read_committed
    by_id: dict[str, set[bytes]] = {}
    for o in outcomes:
        by_id.setdefault(o["id"], set()).add(orjson.dumps(o, option=orjson.OPT_SORT_KEYS))
    repeats = Counter({i: len(v) for i, v in by_id.items() if len(v) > 1})
    assert not repeats, f"ids with different outcomes: {list(repeats)[:3]}"
    assert set(by_id) == expected, (len(set(by_id) - expected), len(expected - set(by_id)))
    times = Counter(o["id"] for o in outcomes)
    doubled = sum(c - 1 for c in times.values())
    print(f"\nmessages committed by each killed run: {kills}; outcomes {len(outcomes)}, repeats {doubled}")
    # A repeat needs a half written to Redis by a killed, uncommitted batch: at most a batch per kill.
    assert doubled <= KILLS * BATCH, doubled
