"""Secrets in settings are SecretStr: never in a repr, a dump or a log line; clients still get them."""

from __future__ import annotations

import logging

import pytest

from driftline.redaction import install_scrubber, redact_url, scrub_known
from driftline.settings import Settings

PASSWORD = "kafka-pw-7f3a9c"
TOKEN = "api-token-51be0d"
REDIS_PW = "redis-pw-c0ffee"


def _secret_settings() -> Settings:
    return Settings(
        kafka_config={"security.protocol": "SASL_SSL", "sasl.username": "u", "sasl.password": PASSWORD},
        redis_url=f"redis://worker:{REDIS_PW}@redis.internal:6380/0",
        redis_password=REDIS_PW,
        api_token=TOKEN,
    )


def test_secrets_are_hidden_in_repr_and_dumps() -> None:
    s = _secret_settings()
    for text in (repr(s), str(s)):
        for secret in (PASSWORD, TOKEN, REDIS_PW):
            assert secret not in text, text
    # A dump keeps redis_url as given (it is an address; redis_password is the place for the
    # password): only the SecretStr fields are hidden there.
    plain = s.model_copy(update={"redis_url": "redis://redis.internal:6380/0"})
    for text in (plain.model_dump_json(), str(plain.model_dump())):
        for secret in (PASSWORD, TOKEN, REDIS_PW):
            assert secret not in text, text
    assert s.redis_display == "redis://worker:***@redis.internal:6380/0"
    assert "sasl.password" in s.model_dump_json()  # hidden, not dropped


def test_clients_still_get_the_secrets() -> None:
    s = _secret_settings()
    assert s.kafka_client_config()["sasl.password"] == PASSWORD
    assert s.kafka_client_config()["sasl.username"] == "u"  # not a secret: kept verbatim
    kwargs = s.redis_client().get_connection_kwargs()
    assert kwargs["password"] == REDIS_PW and kwargs["username"] == "worker"
    assert sorted(s.secrets()) == sorted([PASSWORD, REDIS_PW, TOKEN, REDIS_PW])


def test_kafka_secrets_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_CONFIG", f'{{"sasl.password": "{PASSWORD}", "linger.ms": 5}}')
    s = Settings()
    assert PASSWORD not in repr(s)
    assert s.kafka_client_config()["sasl.password"] == PASSWORD
    assert s.kafka_client_config()["linger.ms"] == 5


def test_empty_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", "")
    assert Settings().api_token is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1", "rediss://user:***@h:1"),
        ("redis://user@h:1", "redis://user@h:1"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_log_records_and_errors_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    install_scrubber(_secret_settings().secrets())
    log = logging.getLogger("test.secrets")
    with caplog.at_level(logging.INFO, logger="test.secrets"):
        log.info("connecting with %s and token=%s", PASSWORD, TOKEN)
        try:
            raise RuntimeError(f"AUTH failed for redis://worker:{REDIS_PW}@host")
        except RuntimeError:
            log.exception("it failed")
    text = caplog.text
    assert "connecting with *** and token=***" in text
    assert "redis://worker:***@host" in text  # the traceback is kept, without the secret
    for secret in (PASSWORD, TOKEN, REDIS_PW):
        assert secret not in text
    assert scrub_known(f"error: {PASSWORD}") == "error: ***"


def test_child_environment_carries_the_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _secret_settings()
    env = s.as_env()
    assert env["DRIFTLINE_API_TOKEN"] == TOKEN
    assert env["DRIFTLINE_REDIS_PASSWORD"] == REDIS_PW
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.kafka_client_config()["sasl.password"] == PASSWORD
    assert again.redis_url == s.redis_url and again.api_token == s.api_token


def test_child_json_carries_the_secrets_a_child_process_needs() -> None:
    from pydantic import SecretStr

    from driftline.settings import Settings

    s = Settings(
        api_token=SecretStr("tok-123"),
        redis_password=SecretStr("pw-456"),
        kafka_config={"sasl.password": "kpw-789", "security.protocol": "SASL_SSL"},
    )
    back = Settings.model_validate_json(s.child_json())
    assert back.api_token is not None and back.api_token.get_secret_value() == "tok-123"
    assert back.redis_password is not None and back.redis_password.get_secret_value() == "pw-456"
    assert "kpw-789" not in s.model_dump_json()  # the ordinary dump still masks them
    assert back.model_dump(mode="python")["kafka_config"]["security.protocol"] == "SASL_SSL"
