"""confluent-kafka security properties -> Faust/aiokafka credentials, for the retrainer."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from driftline.certs import ensure_server_cert
from stream.kafka_security import KafkaSecurityError, faust_broker_settings


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ensure_server_cert(directory, "client")
    return directory


def test_sasl_ssl_scram_reaches_aiokafka(ca: Path) -> None:
    settings = faust_broker_settings(
        {
            "security.protocol": "sasl_ssl",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "retrainer",
            "sasl.password": "pw",
            "ssl.ca.location": str(ca / "ca.pem"),
            "linger.ms": 5,  # tuning: not translated
        }
    )
    creds = settings["broker_credentials"]
    assert isinstance(creds, SASLCredentials) and creds.ssl_context is not None
    auth = credentials_to_aiokafka_auth(creds)  # what Faust hands aiokafka
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("retrainer", "pw")
    context = auth["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(c["subject"] == ((("commonName", "driftline local CA"),),) for c in context.get_ca_certs())


def test_ssl_with_client_certificate_and_no_hostname_check(ca: Path) -> None:
    settings = faust_broker_settings(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(ca / "ca.pem"),
            "ssl.certificate.location": str(ca / "client.pem"),
            "ssl.key.location": str(ca / "client.key"),
            "ssl.endpoint.identification.algorithm": "none",
        }
    )
    creds = settings["broker_credentials"]
    assert isinstance(creds, SSLCredentials) and not creds.context.check_hostname
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"


def test_plaintext_needs_nothing_and_the_untranslatable_is_named() -> None:
    assert faust_broker_settings({}) == {} and faust_broker_settings({"security.protocol": "PLAINTEXT"}) == {}
    with pytest.raises(KafkaSecurityError, match=r"ssl\.keystore\.location"):
        faust_broker_settings({"security.protocol": "SSL", "ssl.keystore.location": "/ks.p12"})
    with pytest.raises(KafkaSecurityError, match="OAUTHBEARER"):
        faust_broker_settings({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"})
    with pytest.raises(KafkaSecurityError, match=r"security\.protocol"):
        faust_broker_settings({"security.protocol": "TLS"})
