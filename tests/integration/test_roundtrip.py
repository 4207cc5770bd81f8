"""Produce synthetic events through the real broker and read every one of them back."""

from __future__ import annotations

from collections import defaultdict

import pytest
from rich.console import Console

from driftline.produce import produce_generated
from driftline.settings import Settings
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from tests.helpers import consume_all

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_100k_events_round_trip_exactly(own_settings: Settings) -> None:
    n, label_delay = 100_000, 50
    topics = Topics(own_settings.topic_prefix)
    tally = produce_generated(
        own_settings, n, rate=0, seed=11, entities=2000, schedule=DriftSchedule(),
        label_delay=label_delay, start_ts=1.7e9, console=Console(quiet=True),
    )  # fmt: skip
    assert (tally.sent, tally.delivered, tally.failed, tally.errors) == (2 * n, 2 * n, 0, [])

    messages = consume_all(own_settings, topics.events, expected=n)
    events = [m.json() for m in messages]
    assert len(events) == n  # exact count: nothing lost, nothing extra
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == n  # no duplicates
    assert all((m.key or b"").decode() == e["entity_id"] for m, e in zip(messages, events, strict=True))

    # Order within each partition is the production order (event ids carry the index).
    per_partition: dict[int, list[int]] = defaultdict(list)
    partition_of_entity: dict[str, int] = {}
    for m, e in zip(messages, events, strict=True):
        per_partition[m.partition].append(int(e["event_id"].rsplit("-", 1)[1]))
        # the key decides the partition: one entity never spans partitions
        assert partition_of_entity.setdefault(e["entity_id"], m.partition) == m.partition
    assert len(per_partition) == 6
    for indexes in per_partition.values():
        assert indexes == sorted(indexes)

    labels = consume_all(own_settings, topics.labels, expected=n)
    label_ids = {m.json()["event_id"] for m in labels}
    assert len(labels) == n and label_ids == set(ids)
