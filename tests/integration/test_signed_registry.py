"""A registry signed with DRIFTLINE_REGISTRY_KEY: a version forged by writing Redis directly is
refused by a running worker (log line, counter, record on the models topic), which keeps serving
the last good version; the API refuses to load it too."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from driftline.settings import Settings
from driftline.wiring import build_api, model_registry, redis_client
from inference.metadata import ModelVersion
from inference.session import sha256_hex
from inference.signing import MetadataSigner, ModelSignatureError
from stream.topics import Topics
from tests.helpers import consume_all
from tests.integration.worker_support import predictions, produce_events, start_worker, trained, wait_until

pytestmark = pytest.mark.integration

KEY = "registry-key-for-tests-5b9e"


def _forge(s: Settings, good: ModelVersion, signature: str | None) -> ModelVersion:
    """What an attacker with Redis write access (and no key) can do: a new version with an
    artifact of their own, made production and announced by a generation bump."""
    onnx = trained(seed=1).onnx_bytes
    ns, version = s.topic_prefix, good.version + 1
    forged = good.model_copy(
        update={"version": version, "sha256": sha256_hex(onnx), "stage": "production", "signature": signature}
    )
    r = redis_client(s)
    ns = f"{{{ns}:registry}}"  # the registry's hash tag (driftline.redis_keys)
    r.set(f"{ns}:artifact:{forged.sha256}", onnx)
    r.set(f"{ns}:model:fraud:v:{version}:meta", forged.model_dump_json())
    r.zadd(f"{ns}:model:fraud:versions", {str(version): version})
    r.hset(f"{ns}:model:fraud:deployment", mapping={"production": str(version)})
    r.hincrby(f"{ns}:model:fraud:deployment", "generation", 1)
    return forged


def test_registered_versions_are_signed_and_verified(own_settings: Settings) -> None:
    s = own_settings.model_copy(update={"registry_key": SecretStr(KEY)})
    registry = model_registry(s)
    meta = registry.register("fraud", trained().onnx_bytes, trained().features, stage="production")
    MetadataSigner(KEY.encode()).verify(meta)
    assert registry.load("fraud")[0].ref == meta.ref
    unsigned = model_registry(own_settings)  # no key: everything works, unverified
    assert unsigned.load("fraud")[0].signature == meta.signature
    _forge(s, meta, signature=None)
    with pytest.raises(ModelSignatureError, match="not signed"):
        registry.load("fraud")
    assert unsigned.load("fraud")[0].version == meta.version + 1  # what a keyless registry cannot tell
    ready = TestClient(build_api(s), raise_server_exceptions=False).get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["model fraud"].startswith("failed")


def test_running_worker_refuses_a_forged_version_and_keeps_serving(
    own_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = own_settings.model_copy(update={"registry_key": SecretStr(KEY)})
    good = model_registry(s).register("fraud", trained().onnx_bytes, trained().features, stage="production")
    running = start_worker(s, batch_size=100)
    produce_events(s, 500, entities=200)
    wait_until(lambda: running.worker.metrics.consumed._value.get() >= 500, 120)

    wrong_key = MetadataSigner(b"an-attackers-own-key-1234").signature(good)
    with caplog.at_level(logging.ERROR, logger="driftline.registry"):
        forged = _forge(s, good, signature=wrong_key)
        refused = running.worker.metrics.registry

        def counted() -> float:
            return (
                refused.get_sample_value("driftline_model_signature_invalid_total", {"model": "fraud"}) or 0
            )

        wait_until(lambda: counted() >= 1, 120)  # the follower polls the registry every 10 s
        produce_events(s, 500, seed=2, entities=200, start_ts=1.71e9)
        wait_until(lambda: running.worker.metrics.consumed._value.get() >= 1000, 120)
        running.stop()

    assert counted() == 1  # reported once, though every poll refuses it again
    assert f"REFUSING model version {forged.ref}" in caplog.text and "does not verify" in caplog.text
    preds = predictions(s, 1000)
    assert len(preds) == 1000 and {p["version"] for p in preds} == {good.version}
    records = [r.json() for r in consume_all(s, Topics(s.topic_prefix).models, 1, timeout=30)]
    alarms = [r for r in records if r.get("kind") == "signature_invalid"]
    assert [(a["name"], a["version"], a["sha256"]) for a in alarms] == [
        ("fraud", forged.version, forged.sha256)
    ]


def test_cli_signs_a_version_registered_without_the_key(
    own_settings: Settings, cli_env: dict[str, str]
) -> None:
    from tests.helpers import run_cli

    meta = model_registry(own_settings).register("fraud", trained().onnx_bytes, trained().features)
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}
    refused = run_cli("models", "sign", meta.ref, env=env)
    assert refused.returncode == 1 and "DRIFTLINE_REGISTRY_KEY" in refused.stderr
    signed = run_cli("models", "sign", meta.ref, env={**env, "DRIFTLINE_REGISTRY_KEY": KEY})
    assert signed.returncode == 0, signed.stderr
    assert KEY not in signed.stdout + signed.stderr
    keyed = model_registry(own_settings.model_copy(update={"registry_key": SecretStr(KEY)}))
    assert keyed.load("fraud", meta.version)[0].signature is not None
