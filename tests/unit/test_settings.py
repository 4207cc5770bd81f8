from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from driftline.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("DRIFTLINE_KAFKA_BOOTSTRAP", "DRIFTLINE_REDIS_URL", "DRIFTLINE_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.topic_prefix == "driftline"
    assert s.partitions == 6


def test_env_beats_yaml_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "custom.yaml"
    config.write_text(
        "topic_prefix: from-yaml\nredis_url: redis://yaml:6380/1\n"
        "kafka_config:\n  security.protocol: SASL_SSL\n  sasl.mechanism: PLAIN\n"
    )
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(config))
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "from-env")
    monkeypatch.delenv("DRIFTLINE_REDIS_URL", raising=False)
    s = Settings()
    assert s.topic_prefix == "from-env"
    assert s.redis_url == "redis://yaml:6380/1"
    assert s.redis_host_port == ("yaml", 6380)
    client = s.kafka_client_config(**{"group.id": "g"})
    assert client.pop("logger").name == "driftline.kafka"  # librdkafka logs through Python logging
    assert client.pop("log_level") == 4
    assert client == {
        "bootstrap.servers": s.kafka_bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "group.id": "g",
    }


def test_kafka_config_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_CONFIG", '{"security.protocol": "SSL", "ssl.ca.location": "/ca.pem"}')
    monkeypatch.setenv("DRIFTLINE_KAFKA_BOOTSTRAP", "broker-a:9093,broker-b:9093")
    s = Settings()
    assert s.kafka_client_config()["ssl.ca.location"] == "/ca.pem"
    assert s.kafka_host_port == ("broker-a", 9093)


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(ValidationError, match="topic_prefix"):
        Settings(topic_prefix="has space")
