"""Small helpers shared by tests."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from driftline.settings import Settings


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `driftline ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-c", "from driftline.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def json(self) -> Any:
        return orjson.loads(self.value)


def consume_all(s: Settings, topic: str, expected: int, timeout: float = 120) -> list[Record]:
    """Read a whole topic from the beginning until `expected` messages (or timeout, then a bit more)."""
    consumer = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    meta: Any = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    # Keep reading briefly past `expected` so that duplicates would be seen, not hidden.
    settle_until: float | None = None
    while time.monotonic() < deadline:
        batch = consumer.consume(num_messages=5000, timeout=0.5)
        for msg in batch:
            err = msg.error()
            assert err is None, err
            out.append(Record(msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value() or b""))
        if len(out) >= expected:
            settle_until = settle_until or time.monotonic() + 1.5
            if time.monotonic() > settle_until:
                break
    consumer.close()
    return out
