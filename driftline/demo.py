"""``driftline demo``: the main job on the local stack.

Today it shows the foundation: a synthetic card-fraud stream with covariate drift is produced
to ``<prefix>.events`` while this process reads it back from the broker and prints, per window
of events, the throughput, the partitions it came through and the drifted features' means.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from driftline.errors import DriftlineError
from driftline.produce import produce_generated
from driftline.settings import Settings
from stream.producer import DeliveryTracker
from stream.synthetic import DRIFTED_FEATURES, DriftSchedule
from stream.topics import Topics


@dataclass
class Window:
    first_index: int
    amounts: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    online: int = 0
    partitions: Counter[int] = field(default_factory=Counter)


def _end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        raise DriftlineError(f"topic {topic!r} does not exist (run `driftline topics create`)")
    parts = []
    for p in meta.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        parts.append(TopicPartition(topic, p, high))
    return parts


def run_demo(s: Settings, n: int, drift_at: int, rate: float, console: Console) -> None:
    topics = Topics(s.topic_prefix)
    consumer = Consumer(
        {**s.kafka_client_config(), "group.id": "driftline-demo", "enable.auto.commit": False}
    )
    # Start reading exactly where the stream is now, so we see only this run's events.
    consumer.assign(_end_offsets(consumer, topics.events))

    schedule = DriftSchedule(covariate_at=drift_at, width=n // 20)
    result: dict[str, DeliveryTracker | BaseException] = {}

    def produce() -> None:
        try:
            result["tally"] = produce_generated(
                s, n, rate, seed=42, entities=500, schedule=schedule, label_delay=200,
                start_ts=time.time(), console=Console(quiet=True),
            )  # fmt: skip
        except BaseException as exc:
            result["error"] = exc

    console.rule(
        f"[bold]Driftline demo[/bold]: {n:,} events -> {topics.events}, covariate drift at {drift_at:,}"
    )
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    table = Table("events", "ev/s", "parts", "amount", "distance", "online %")
    window_size = max(n // 10, 1)
    seen, started, window = 0, time.monotonic(), Window(0)
    idle_since = time.monotonic()
    while seen < n:
        msgs = consumer.consume(num_messages=1000, timeout=0.5)
        if not msgs:
            if not producer.is_alive() and (time.monotonic() - idle_since > 15 or "error" in result):
                break
            continue
        idle_since = time.monotonic()
        for msg in msgs:
            value = msg.value()
            if msg.error() or value is None:
                continue
            features = orjson.loads(value)["features"]
            window.amounts.append(features["amount"])
            window.distances.append(features["distance_from_home"])
            window.online += features["merchant_category"] == "online_retail"
            window.partitions[msg.partition() or 0] += 1
            seen += 1
            if seen % window_size == 0 or seen == n:
                k = len(window.amounts)
                elapsed = time.monotonic() - started
                style = "bold red" if window.first_index >= drift_at else ""
                table.add_row(
                    f"{window.first_index:,}-{seen - 1:,}",
                    f"{seen / elapsed:,.0f}",
                    str(len(window.partitions)),
                    f"{np.mean(window.amounts):.1f}",
                    f"{np.mean(window.distances):.2f}",
                    f"{100 * window.online / k:.1f}",
                    style=style,
                )
                window = Window(seen)
    consumer.close()
    producer.join(timeout=30)
    console.print(table)
    if "error" in result:
        raise DriftlineError(f"producer failed: {result['error']}")
    tally = result.get("tally")
    assert isinstance(tally, DeliveryTracker)
    console.print(
        f"produced {tally.sent:,} events+labels, delivered {tally.delivered:,}, failed {tally.failed:,}; "
        f"read back {seen:,} of {n:,} events through Kafka.",
        highlight=False,
    )
    drifted = ", ".join(f"{name} ({'+' if d > 0 else '-'})" for name, d in DRIFTED_FEATURES.items())
    console.print(f"Rows in red come after the drift point; drifted features: {drifted}.")
    if seen < n or tally.failed:
        raise DriftlineError(f"demo read back {seen} of {n} events")
