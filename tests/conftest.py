"""Shared fixtures. Integration tests run against the real local stack (`driftline stack up`);
every test session gets its own topic prefix, so runs never read each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from driftline.settings import Settings
from driftline.stack import LocalStack
from stream.topics import Topics, create_topics, delete_topics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def run_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def stack_settings(run_prefix: str) -> Iterator[Settings]:
    """Settings for the running local stack, with this run's own topic prefix and topics."""
    s = Settings(topic_prefix=run_prefix)
    stack = LocalStack(s, log=lambda _m: None)
    if not (stack.kafka_answering() and stack.redis_answering()):
        pytest.fail(
            f"integration tests need the local stack at {s.kafka_bootstrap} and {s.redis_url}: "
            "run `make test` (it starts it) or `driftline stack up`"
        )
    admin = AdminClient(s.kafka_client_config())
    create_topics(admin, Topics(run_prefix), partitions=6)
    yield s
    delete_topics(admin, Topics(run_prefix).all())


@pytest.fixture
def cli_env(stack_settings: Settings) -> dict[str, str]:
    """Environment for running the `driftline` CLI as a subprocess against this run's topics."""
    return {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": stack_settings.redis_url,
        "DRIFTLINE_TOPIC_PREFIX": stack_settings.topic_prefix,
        "COLUMNS": "200",
    }


@pytest.fixture
def own_settings(stack_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Like `stack_settings`, with topics of this test's own (for exact counts)."""
    prefix = f"{stack_settings.topic_prefix}-{uuid.uuid4().hex[:6]}"
    s = stack_settings.model_copy(update={"topic_prefix": prefix})
    admin = AdminClient(s.kafka_client_config())
    create_topics(admin, Topics(prefix), partitions=6)
    yield s
    delete_topics(admin, Topics(prefix).all())
