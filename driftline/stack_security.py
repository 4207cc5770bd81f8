"""What makes the local stack a secured one (`driftline stack up --secure`): users, passwords,
certificates, and the broker's and Redis's security configuration.

Kafka gets a ``SASL_SSL`` listener (SCRAM-SHA-512; the users are created when the storage is
formatted, ``--add-scram``) with a PEM keystore signed by the stack's throwaway CA; the
controller listener stays plaintext on the loopback interface. Redis listens on TLS only
(``--port 0 --tls-port``) and knows only the ACL users of `REDIS_USERS` (``default`` is off).

Passwords and the registry key are made once and kept in ``<dir>/secrets.json`` (0600); per
component, ``<dir>/secrets/<role>.env`` holds the variables that component needs beside the
printed ``driftline.yaml`` (which has no secret): its Redis user and password, the Kafka
password, the registry key.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from driftline.certs import ServerCert, ensure_server_cert
from driftline.settings import Settings

KAFKA_MECHANISM = "SCRAM-SHA-512"
KAFKA_ADMIN = "admin"  # the broker's own (inter-broker) user
KAFKA_USER = "driftline"  # every Driftline component's Kafka user

# The keys a stream component writes besides the registry (online features, drift windows and
# statistics, alerts and incidents, the outcome joiner's state; `driftline.redis_keys`, whose
# hash-tagged keys start with "{<ns>:..."): the worker and outcome users may write these and only
# read the rest, so neither can register, change or sign a model version ("{<ns>:registry}:*").
STREAM_KEYS = ("*:fs:*", "*:drift:*", "*:join:*", "*:outcomes:*")
_STREAM_ACL = "%R~* " + " ".join(f"~{k}" for k in STREAM_KEYS) + " &* +@all -@admin -@dangerous"
# Redis ACL users: the CLI and the retrainer (the registry's writers) may do anything with the
# keys; the worker and the outcome joiner read the registry and write their own keys; the API
# reads, nothing else.
REDIS_USERS: dict[str, str] = {
    "driftline": "~* &* +@all -@admin",
    "worker": _STREAM_ACL,
    "outcomes": _STREAM_ACL,
    "api": "%R~* +@all -@write -@admin -@dangerous",
}
ROLES = tuple(REDIS_USERS)


class StackSecrets(BaseModel):
    """The secured stack's passwords and registry key (stored 0600, never printed)."""

    kafka_admin: SecretStr
    kafka_user: SecretStr
    redis: dict[str, SecretStr]
    registry_key: SecretStr

    @classmethod
    def load_or_create(cls, path: Path) -> StackSecrets:
        if path.exists():
            return cls.model_validate_json(path.read_text())
        made = cls(
            kafka_admin=SecretStr(secrets.token_urlsafe(24)),
            kafka_user=SecretStr(secrets.token_urlsafe(24)),
            redis={role: SecretStr(secrets.token_urlsafe(24)) for role in ROLES},
            registry_key=SecretStr(secrets.token_urlsafe(32)),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, json.dumps(made.revealed()))
        return made

    def values(self) -> list[str]:
        """Every secret, for scrubbing output."""
        kept = [self.kafka_admin, self.kafka_user, self.registry_key, *self.redis.values()]
        return [s.get_secret_value() for s in kept]

    def revealed(self) -> dict[str, Any]:
        return {
            "kafka_admin": self.kafka_admin.get_secret_value(),
            "kafka_user": self.kafka_user.get_secret_value(),
            "redis": {k: v.get_secret_value() for k, v in self.redis.items()},
            "registry_key": self.registry_key.get_secret_value(),
        }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass(frozen=True)
class StackSecurity:
    """The secured stack's material in `directory` (its ``tls/`` and secrets)."""

    directory: Path
    hosts: tuple[str, ...]

    @property
    def tls_dir(self) -> Path:
        return self.directory / "tls"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def secrets(self) -> StackSecrets:
        return StackSecrets.load_or_create(self.directory / "secrets.json")

    def server_cert(self, name: str) -> ServerCert:
        return ensure_server_cert(self.tls_dir, name, ("localhost", *self.hosts))

    # ---- clients --------------------------------------------------------------------------
    def public_settings(self, s: Settings) -> dict[str, Any]:
        """The driftline.yaml of the secured stack: addresses, users, TLS; no secret."""
        redis_host, redis_port = s.redis_host_port
        return {
            "kafka_bootstrap": s.kafka_bootstrap,
            "kafka_config": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": KAFKA_MECHANISM,
                "sasl.username": KAFKA_USER,
                "ssl.ca.location": str(self.ca),
            },
            "redis_url": f"rediss://{redis_host}:{redis_port}/0",
            "redis_tls_ca": str(self.ca),
            "redis_username": "driftline",
        }

    def role_env(self, role: str) -> dict[str, str]:
        """The secret variables of one component (`ROLES`), beside the public settings."""
        sec = self.secrets()
        return {
            "DRIFTLINE_REDIS_USERNAME": role,
            "DRIFTLINE_REDIS_PASSWORD": sec.redis[role].get_secret_value(),
            "DRIFTLINE_KAFKA_CONFIG": json.dumps({"sasl.password": sec.kafka_user.get_secret_value()}),
            "DRIFTLINE_REGISTRY_KEY": sec.registry_key.get_secret_value(),
        }

    def client_settings(self, s: Settings, role: str = "driftline") -> Settings:
        """`s` pointed at the secured stack as the component `role`, secrets included."""
        public = self.public_settings(s)
        sec = self.secrets()
        kafka = {**public["kafka_config"], "sasl.password": sec.kafka_user.get_secret_value()}
        return s.model_copy(
            update={
                "kafka_config": Settings(kafka_config=kafka).kafka_config,  # secrets as SecretStr
                "redis_url": public["redis_url"],
                "redis_tls_ca": self.ca,
                "redis_username": role,
                "redis_password": sec.redis[role],
                "registry_key": sec.registry_key,
            }
        )

    def write_role_envs(self) -> Path:
        """``secrets/<role>.env`` for every role (0600); returns the directory."""
        out = self.directory / "secrets"
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        for role in ROLES:
            lines = [f"{k}='{v}'" for k, v in self.role_env(role).items()]
            _write_private(out / f"{role}.env", "\n".join(lines) + "\n")
        return out

    # ---- services -------------------------------------------------------------------------
    def kafka_properties(self) -> dict[str, str]:
        """The broker's SASL_SSL listener: SCRAM, a PEM keystore signed by the stack's CA."""
        cert = self.server_cert("kafka")
        admin = self.secrets().kafka_admin.get_secret_value()
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{KAFKA_ADMIN}" password="{admin}";'
        )
        return {
            "sasl.enabled.mechanisms": KAFKA_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": KAFKA_MECHANISM,
            f"listener.name.sasl_ssl.{KAFKA_MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(cert.chain),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca),
            "ssl.client.auth": "none",
        }

    def kafka_format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        sec = self.secrets()
        users = ((KAFKA_ADMIN, sec.kafka_admin), (KAFKA_USER, sec.kafka_user))
        args: list[str] = []
        for name, password in users:
            args += ["--add-scram", f"{KAFKA_MECHANISM}=[name={name},password={password.get_secret_value()}]"]
        return args

    def redis_args(self, port: int, redis_dir: Path) -> list[str]:
        """redis-server arguments: TLS only on `port`, the ACL users of `REDIS_USERS`."""
        cert = self.server_cert("redis")
        sec = self.secrets()
        acl = redis_dir / "users.acl"
        lines = ["user default off"]
        lines += [
            f"user {role} on >{sec.redis[role].get_secret_value()} {rules}"
            for role, rules in REDIS_USERS.items()
        ]
        _write_private(acl, "\n".join(lines) + "\n")
        return [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
            "--aclfile", str(acl),
        ]  # fmt: skip
