"""The pinned broker works with both Python clients Driftline uses: confluent-kafka (worker,
producer) and aiokafka (under faust-streaming, the retrainer). See deploy/local/README.md."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftline.settings import Settings
from stream.producer import EventProducer
from stream.topics import Topics
from tests.helpers import consume_all

pytestmark = pytest.mark.integration


def test_confluent_and_aiokafka_round_trip(stack_settings: Settings) -> None:
    topic = Topics(stack_settings.topic_prefix).name("predictions")  # an otherwise idle topic
    producer = EventProducer(stack_settings.kafka_client_config())
    for i in range(20):
        producer.send(topic, f"k{i}", {"from": "confluent", "i": i})
    assert producer.flush().delivered == 20

    async def aio_round_trip() -> list[dict[str, object]]:
        import orjson

        aio_producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap)
        await aio_producer.start()
        try:
            for i in range(20):
                await aio_producer.send_and_wait(topic, orjson.dumps({"from": "aiokafka", "i": i}), key=b"k")
        finally:
            await aio_producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack_settings.kafka_bootstrap,
            group_id=f"{stack_settings.topic_prefix}-aio",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        seen: list[dict[str, object]] = []
        try:
            while len(seen) < 40:
                msg = await asyncio.wait_for(consumer.getone(), timeout=30)
                seen.append(orjson.loads(msg.value))
            await consumer.commit()  # group coordination works too
        finally:
            await consumer.stop()
        return seen

    seen = asyncio.run(aio_round_trip())
    assert sorted((str(m["from"]), int(str(m["i"]))) for m in seen) == sorted(
        [("confluent", i) for i in range(20)] + [("aiokafka", i) for i in range(20)]
    )
    # and confluent-kafka reads what aiokafka wrote
    back = consume_all(stack_settings, topic, expected=40, timeout=30)
    assert sum(b'"aiokafka"' in m.value for m in back) == 20
