"""Chaos: Redis loses the model registry (FLUSHALL, an old snapshot) and `driftline models restore`
brings it back from the durable copy on ``<prefix>.registry``.

FLUSHALL runs on a private redis-server (`PrivateStack`), never on the shared one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry, Gauge

from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import model_registry, redis_client
from feature_store.definitions import fraud_feature_view
from inference.registry import ModelRegistry
from inference.registry_log import RegistrySnapshot
from inference.training import TrainedModel, train_model
from stream.scoring import ModelFollower
from stream.topics import Topics, create_topics
from tests.helpers import run_cli
from tests.integration.worker_support import trained
from tests.private_stack import PrivateStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _register(reg: ModelRegistry, seed: int, m: TrainedModel | None = None) -> int:
    m = m or trained(seed)
    mv = reg.register("fraud", m.onnx_bytes, m.features, m.training, m.reference, m.score_reference)
    return mv.version


def _view_model() -> TrainedModel:
    """A model on the fraud view's 28 features: its metadata (reference samples) is over 1 MB."""
    data = synthetic_training_set(20_000, seed=9, view=fraud_feature_view())
    return train_model(data.numeric, data.categorical, data.labels, data.ts, seed=9)


def _cli_env(s: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": s.redis_url,
        "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
        "DRIFTLINE_REGISTRY_KEEP_ARCHIVED": str(s.registry_keep_archived),
        "COLUMNS": "200",
    }


def test_flushall_then_models_restore_brings_every_version_back(tmp_path: Path) -> None:
    with PrivateStack(tmp_path) as ps:
        s = ps.settings.model_copy(update={"registry_keep_archived": 1})
        create_topics(AdminClient(s.kafka_client_config()), Topics(s.topic_prefix), partitions=2)
        reg = model_registry(s)
        big = _view_model()
        versions = [*(_register(reg, seed) for seed in range(4)), _register(reg, 4, big)]
        assert versions == [1, 2, 3, 4, 5]
        assert len(reg.get("fraud", 5).model_dump_json()) > 1_000_000  # over the message limit
        reg.promote("fraud", 1)
        reg.promote("fraud", 2)  # 1 archived
        reg.promote("fraud", 3)  # 2 archived (previous production), 1 beyond the retention
        reg.canary("fraud", 4, 0.25)
        reg.shadow("fraud", 5)
        # Retention: fraud:1 lost its artifact; the previous production fraud:2 keeps its own.
        with pytest.raises(Exception, match="missing from Redis"):
            reg.load("fraud", 1)
        with pytest.raises(ValueError, match="no artifact any more"):
            reg.promote("fraud", 1)
        before = {v.version: v for v in reg.versions("fraud")}
        history = reg.history("fraud")
        deployment = reg.deployment("fraud")
        stages = [before[v].stage for v in versions]
        assert stages == ["archived", "archived", "production", "canary", "shadow"]

        # A worker's follower serves production; then the registry vanishes.
        gauge = Gauge("missing", "", ["model"], registry=CollectorRegistry())
        follower = ModelFollower(
            model_registry(s, publish=False), "fraud", s.kafka_client_config(), "unused", missing_gauge=gauge
        )
        scorer = follower.build()
        assert scorer is not None and scorer.deployment.production is not None
        follower.mark_current(scorer)
        follower.refresh()
        assert not follower.metadata_missing

        client = redis_client(s)
        client.flushall()
        assert reg.versions("fraud") == [] and reg.deployment("fraud").production is None
        follower.refresh()
        assert follower.metadata_missing and gauge.labels("fraud")._value.get() == 1
        assert follower.take() is None  # nothing replaces the scorer it has: it keeps serving fraud:3

        out = run_cli("models", "restore", env=_cli_env(s))
        assert out.returncode == 0, out.stderr
        assert "fraud" in out.stdout

        after = {v.version: v for v in reg.versions("fraud")}
        assert after == before  # every version, its sha256, its stage, its metadata
        for v in (2, 3, 4, 5):  # every retained artifact is back and verified by sha256 on load
            meta, _ = reg.load("fraud", v)
            assert meta.sha256 == before[v].sha256
        assert reg.history("fraud") == history
        assert reg.deployment("fraud") == deployment
        follower.refresh()
        assert not follower.metadata_missing and gauge.labels("fraud")._value.get() == 0

        # A new version gets a number never used before, also when Redis is rolled back to an
        # old snapshot (simulated: the counter back at 2, as before fraud:3 was registered).
        assert _register(reg, 5) == 6
        client.set(f"{{{s.topic_prefix}:registry}}:model:fraud:next_version", 2)
        assert _register(reg, 6) == 7
        client.flushall()
        assert _register(reg, 7) == 8  # even without a restore

        assert reg.durable is not None
        snap = RegistrySnapshot.fold(reg.durable.read())
        assert sorted(snap.versions["fraud"]) == list(range(1, 9))
        assert before[1].sha256 not in snap.artifacts  # pruned from the durable copy too
        assert not snap.problems

        # A version registered without the durable copy (before it existed) is copied there by
        # `models restore`, so the next FLUSHALL does not lose it either.
        legacy = ModelRegistry(client, s.topic_prefix)
        m = trained(8)
        old = legacy.register("churn", m.onnx_bytes, m.features, m.training, m.reference, m.score_reference)
        out = run_cli("models", "restore", env=_cli_env(s))
        assert out.returncode == 0 and "churn:1" in out.stdout, out.stderr
        client.flushall()
        assert run_cli("models", "restore", env=_cli_env(s)).returncode == 0
        assert legacy.get("churn", 1) == old and legacy.load("churn", 1)[0].sha256 == m.sha256
        assert [e.kind for e in legacy.history("churn")] == ["registered"]
