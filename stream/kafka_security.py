"""confluent-kafka's security properties, translated once for Faust (aiokafka).

Every Driftline client but the retrainer is a confluent-kafka client and takes ``kafka_config``
verbatim; the retrainer's Faust app speaks aiokafka, which wants a credentials object and an
``ssl.SSLContext``. `faust_broker_settings` maps the one settings shape onto the other:

=======================================  ==================================================
confluent-kafka                          Faust / aiokafka
=======================================  ==================================================
``security.protocol``                    the credentials' protocol (PLAINTEXT, SSL, SASL_*)
``sasl.mechanism`` / ``sasl.mechanisms``  ``SASLCredentials(mechanism=...)`` (PLAIN, SCRAM-*)
``sasl.username``, ``sasl.password``     ``SASLCredentials(username, password)``
``sasl.kerberos.service.name``           ``GSSAPICredentials(kerberos_service_name)``
``ssl.ca.location`` / ``ssl.ca.pem``     the context's CA file / CA data
``ssl.certificate.location``,            the context's client certificate chain
``ssl.key.location``, ``ssl.key.password``
``enable.ssl.certificate.verification``  ``verify_mode`` (false: CERT_NONE)
``ssl.endpoint.identification.algorithm``  ``check_hostname`` (``none``: off)
=======================================  ==================================================

Other ``ssl.*``/``sasl.*`` properties (a PKCS#12 keystore, OAUTHBEARER) have no translation: a
`KafkaSecurityError` names them, instead of a retrainer that silently connects without them.
Properties that are not about security (``linger.ms``, ...) are confluent-kafka tuning and
are not translated.

>>> faust_broker_settings({"linger.ms": 5})
{}
>>> settings = faust_broker_settings({"security.protocol": "SASL_PLAINTEXT",
...     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p"})
>>> creds = settings["broker_credentials"]
>>> creds.protocol.value, creds.mechanism.value, creds.username
('SASL_PLAINTEXT', 'SCRAM-SHA-512', 'u')
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials

HANDLED = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "enable.ssl.certificate.verification",
        "ssl.endpoint.identification.algorithm",
    }
)
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")


class KafkaSecurityError(ValueError):
    """A security property the retrainer's Kafka client cannot honour."""


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def ssl_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context confluent-kafka's ``ssl.*`` properties describe."""
    context = ssl.create_default_context(
        cafile=config.get("ssl.ca.location") or None, cadata=config.get("ssl.ca.pem") or None
    )
    if config.get("ssl.certificate.location") or config.get("ssl.key.location"):
        context.load_cert_chain(
            str(config.get("ssl.certificate.location") or config.get("ssl.key.location")),
            config.get("ssl.key.location") or None,
            config.get("ssl.key.password") or None,
        )
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    if not _flag(config.get("enable.ssl.certificate.verification", True)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def faust_broker_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Faust app settings (``broker_credentials``) for the security properties of a
    confluent-kafka configuration; {} for a plaintext cluster."""
    unknown = sorted(k for k in config if k.startswith(("ssl.", "sasl.")) and k not in HANDLED)
    if unknown:
        raise KafkaSecurityError(
            f"the retrainer (Faust/aiokafka) cannot use kafka_config {', '.join(unknown)}: "
            "use PEM files (ssl.ca.location, ssl.certificate.location, ssl.key.location) and "
            f"SASL {'/'.join(MECHANISMS)}"
        )
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(
            f"unknown kafka_config security.protocol {protocol!r}: use {', '.join(PROTOCOLS)}"
        )
    if protocol == "PLAINTEXT":
        return {}
    context = ssl_context(config) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        assert context is not None
        return {"broker_credentials": SSLCredentials(context)}
    mechanism = str(config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "GSSAPI").upper()
    if mechanism not in MECHANISMS:
        raise KafkaSecurityError(
            f"the retrainer cannot use sasl.mechanism {mechanism!r}: use {', '.join(MECHANISMS)}"
        )
    if mechanism == "GSSAPI":
        service = str(config.get("sasl.kerberos.service.name", "kafka"))
        return {"broker_credentials": GSSAPICredentials(kerberos_service_name=service, ssl_context=context)}
    credentials = SASLCredentials(
        username=str(config.get("sasl.username", "")),
        password=str(config.get("sasl.password", "")),
        ssl_context=context,
        mechanism=mechanism,
    )
    return {"broker_credentials": credentials}
