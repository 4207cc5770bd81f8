"""A worker's guard against forged model versions: what it refuses is said loudly, once.

`GuardedRegistry` is the registry a worker's `ModelFollower` reads: it verifies the signature
of every version of a deployment before the follower sees it (the follower then keeps serving
its last good snapshot, as it does for any version that fails to load). Each refused version is
reported once (per ref and signature) by `SignatureAlarm`: an error log line, the counter
``driftline_model_signature_invalid_total{model}``, and a ``signature_invalid`` record on
``<prefix>.models`` (key = model name), beside the lifecycle events, for people and alerting.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import orjson
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter

from inference.metadata import Deployment, ModelVersion
from inference.registry import ModelRegistry
from inference.session import ModelSession
from inference.signing import MetadataSigner, ModelSignatureError
from stream.producer import PRODUCER_DEFAULTS

log = logging.getLogger("driftline.registry")


class SignatureAlarm:
    """Reports refused versions: log line, counter, record on the models topic (each once)."""

    def __init__(
        self, producer_config: dict[str, object], topic: str, registry: CollectorRegistry, reporter: str
    ) -> None:
        self.topic = topic
        self.reporter = reporter
        self.invalid = Counter(
            "driftline_model_signature_invalid",
            "Model versions refused because their metadata signature does not verify",
            ["model"],
            registry=registry,
        )
        self._producer = Producer({**producer_config, **PRODUCER_DEFAULTS, "linger.ms": 0})
        self._seen: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()

    def __call__(self, meta: ModelVersion, exc: ModelSignatureError) -> None:
        with self._lock:
            if (meta.ref, meta.signature) in self._seen:
                return
            self._seen.add((meta.ref, meta.signature))
        log.error(
            "REFUSING model version %s (sha256 %s): %s; serving the last good version",
            meta.ref,
            meta.sha256,
            exc,
        )
        self.invalid.labels(meta.name).inc()
        record = {
            "kind": "signature_invalid",
            "name": meta.name,
            "version": meta.version,
            "sha256": meta.sha256,
            "reason": str(exc),
            "reporter": self.reporter,
            "ts": datetime.now(UTC).isoformat(),
        }
        try:
            self._producer.produce(self.topic, orjson.dumps(record), meta.name.encode())
            if self._producer.flush(10):
                log.error(
                    "the signature_invalid record of %s was not acknowledged by %s", meta.ref, self.topic
                )
        except Exception as exc2:  # the log line and the counter stand; the record is a bonus
            log.error("could not publish the signature_invalid record of %s: %r", meta.ref, exc2)


class GuardedRegistry:
    """The follower's view of the registry: every served version verified against the key."""

    def __init__(self, registry: ModelRegistry, signer: MetadataSigner, alarm: SignatureAlarm) -> None:
        self.registry = registry
        self.signer = signer
        self.alarm = alarm

    def _verified(self, meta: ModelVersion) -> ModelVersion:
        try:
            self.signer.verify(meta)
        except ModelSignatureError as exc:
            self.alarm(meta, exc)
            raise
        return meta

    def deployment(self, name: str) -> Deployment:
        d = self.registry.deployment(name)
        for meta in (d.production, d.canary, d.shadow):
            if meta is not None:
                self._verified(meta)
        return d

    def generation(self, name: str) -> int:
        return self.registry.generation(name)

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, ModelSession]:
        try:
            return self.registry.load(name, version)  # the registry verifies with the same signer
        except ModelSignatureError as exc:
            self.alarm(self.registry.get(name, version), exc)
            raise
