"""The model registry against the real Redis of the local stack (`driftline stack up`)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from driftline.settings import Settings
from inference.metadata import FeatureSpec, ModelEvent
from inference.registry import ModelRegistry
from inference.routing import route
from inference.session import ModelIntegrityError
from inference.training import TrainedModel, train_model

pytestmark = pytest.mark.integration


def _train(seed: int) -> TrainedModel:
    rng = np.random.default_rng(seed)
    n = 800
    amount = rng.lognormal(3.0, 1.0, size=n)
    risk = rng.random(size=n)
    country = rng.choice(["DE", "FR", "US"], size=n)
    y = (np.log(amount) + 3 * risk + (country == "US") + rng.normal(scale=0.5, size=n) > 5.0).astype(int)
    return train_model(
        {"amount": amount, "risk": risk}, {"country": country}, y, seed=seed, source=f"seed {seed}"
    )


@pytest.fixture(scope="module")
def models() -> list[TrainedModel]:
    out = [_train(seed) for seed in range(3)]
    assert len({m.sha256 for m in out}) == 3
    return out


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    url = Settings().redis_url
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the registry tests need Redis at {url} (`driftline stack up`): {exc}")
    yield r
    r.close()


@pytest.fixture
def events() -> list[ModelEvent]:
    return []


@pytest.fixture
def registry(
    client: redis.Redis, events: list[ModelEvent], new_prefix: Callable[[str], str]
) -> ModelRegistry:
    return ModelRegistry(client, new_prefix("registry"), on_event=events.append)


def _register(registry: ModelRegistry, model: TrainedModel, name: str = "fraud", **kwargs: object) -> int:
    mv = registry.register(
        name,
        model.onnx_bytes,
        model.features,
        training=model.training,
        reference=model.reference,
        score_reference=model.score_reference,
        **kwargs,  # type: ignore[arg-type]
    )
    return mv.version


def _stages(registry: ModelRegistry, name: str = "fraud") -> dict[int, str]:
    return {v.version: v.stage for v in registry.versions(name)}


def test_register_list_get_load(
    registry: ModelRegistry, models: list[TrainedModel], client: redis.Redis
) -> None:
    m = models[0]
    mv = registry.register(
        "fraud", m.onnx_bytes, m.features, m.training, m.reference, m.score_reference, threshold=0.3
    )
    assert (mv.name, mv.version, mv.stage, mv.sha256) == ("fraud", 1, "candidate", m.sha256)
    assert mv.input_name == "input" and mv.threshold == 0.3
    assert registry.names() == ["fraud"]
    assert [v.ref for v in registry.versions("fraud")] == ["fraud:1"]
    assert registry.get("fraud", 1) == mv
    assert (
        mv.training == m.training and mv.reference == m.reference and mv.score_reference == m.score_reference
    )

    meta, session = registry.load("fraud", 1)
    assert meta == mv and session.threshold == 0.3
    X = np.random.default_rng(0).normal(size=(50, session.width)).astype(np.float32)
    np.testing.assert_array_equal(session.predict(X), m.session().predict(X))

    # Another process (another client, same Redis address) sees the same registry.
    other = ModelRegistry(redis.Redis.from_url(Settings().redis_url), registry.namespace)
    assert other.get("fraud", 1) == mv
    assert other.load("fraud", 1)[1].predict(X).tolist() == session.predict(X).tolist()

    with pytest.raises(LookupError, match="model 'fraud' has no production version"):
        registry.get("fraud")
    assert registry.deployment("fraud").production is None


def test_version_numbers_increase_per_model(registry: ModelRegistry, models: list[TrainedModel]) -> None:
    assert [_register(registry, m) for m in models] == [1, 2, 3]
    assert _register(registry, models[0], name="churn") == 1
    assert _register(registry, models[1]) == 4
    assert registry.names() == ["churn", "fraud"]
    assert [v.version for v in registry.versions("fraud")] == [1, 2, 3, 4]


def test_concurrent_registrations_get_distinct_versions(
    registry: ModelRegistry, models: list[TrainedModel]
) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        v = _register(registry, models[0])
        with lock:
            results.append(v)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))


def test_artifact_is_stored_once_per_sha(
    registry: ModelRegistry, models: list[TrainedModel], client: redis.Redis
) -> None:
    _register(registry, models[0])
    _register(registry, models[0])
    _register(registry, models[1])
    artifacts = sorted(client.scan_iter(match=f"{{{registry.namespace}:registry}}:artifact:*"))
    assert artifacts == sorted(registry.artifact_key(m.sha256).encode() for m in models[:2])
    assert client.get(registry.artifact_key(models[0].sha256)) == models[0].onnx_bytes
    v1, v2, _ = registry.versions("fraud")
    assert v1.sha256 == v2.sha256 == models[0].sha256


def test_invalid_models_are_not_stored(
    registry: ModelRegistry, models: list[TrainedModel], client: redis.Redis, events: list[ModelEvent]
) -> None:
    with pytest.raises(ModelIntegrityError, match="not a loadable ONNX model"):
        registry.register("fraud", b"garbage", models[0].features)
    wider = [*models[0].features, FeatureSpec(name="extra", kind="numeric")]
    with pytest.raises(ModelIntegrityError, match="width"):
        registry.register("fraud", models[0].onnx_bytes, wider)
    with pytest.raises(ValueError, match="canary"):
        registry.register("fraud", models[0].onnx_bytes, models[0].features, stage="canary")
    with pytest.raises(ValueError, match="invalid model name"):
        registry.register("fraud:2", models[0].onnx_bytes, models[0].features)
    assert registry.names() == [] and events == []
    assert not list(client.scan_iter(match=f"*{registry.namespace}:*"))


def test_promote_archives_the_previous_production_and_rollback_restores_it(
    registry: ModelRegistry, models: list[TrainedModel]
) -> None:
    v1, v2, v3 = (_register(registry, m) for m in models)
    assert registry.generation("fraud") == 0
    registry.promote("fraud", v1)
    assert registry.get("fraud").version == v1
    assert registry.generation("fraud") == 1
    registry.promote("fraud", v2)
    assert registry.generation("fraud") == 2
    assert registry.get("fraud").version == v2
    assert _stages(registry) == {v1: "archived", v2: "production", v3: "candidate"}
    d = registry.deployment("fraud")
    assert d.production is not None and d.production.version == v2 and d.canary is None

    ev = registry.rollback("fraud")
    assert (ev.kind, ev.version, ev.stage, ev.detail["restored"]) == ("rolled_back", v2, "archived", v1)
    assert registry.get("fraud").version == v1
    assert _stages(registry) == {v1: "production", v2: "archived", v3: "candidate"}
    with pytest.raises(ValueError, match="nothing to roll back for model 'fraud'"):
        registry.rollback("fraud")
    with pytest.raises(ValueError, match="fraud:1 is already in production"):
        registry.promote("fraud", v1)
    assert registry.generation("fraud") == 3  # refused changes change nothing
    # The served session follows the deployment.
    meta, session = registry.load("fraud")
    assert meta.version == v1 and session.ref == "fraud:1"


def test_canary_and_its_rollback(registry: ModelRegistry, models: list[TrainedModel]) -> None:
    v1, v2, v3 = (_register(registry, m) for m in models)
    with pytest.raises(ValueError, match="no production version"):
        registry.canary("fraud", v2, 0.25)
    registry.promote("fraud", v1)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            registry.canary("fraud", v2, bad)
    with pytest.raises(ValueError, match="in production"):
        registry.canary("fraud", v1, 0.2)

    registry.canary("fraud", v2, 0.25)
    d = registry.deployment("fraud")
    assert d.production is not None and d.production.version == v1
    assert d.canary is not None and d.canary.version == v2 and d.canary_fraction == 0.25
    assert d.canary.stage == "canary" and d.canary.canary_fraction == 0.25
    ids = [f"card-{i}" for i in range(10_000)]
    assert abs(route(d, ids).mean() - 0.25) < 0.02

    # Ramping up keeps the canary, changes only its fraction.
    ev = registry.canary("fraud", v2, 0.5)
    assert ev.detail["previous_fraction"] == 0.25 and ev.fraction == 0.5
    assert registry.deployment("fraud").canary_fraction == 0.5

    ev = registry.rollback("fraud")
    assert (ev.kind, ev.version, ev.stage, ev.fraction, ev.detail["arm"]) == (
        "rolled_back",
        v2,
        "archived",
        0.5,
        "canary",
    )
    d = registry.deployment("fraud")
    assert d.canary is None and d.canary_fraction == 0.0
    assert d.production is not None and d.production.version == v1
    assert not route(d, ids).any()
    assert _stages(registry) == {v1: "production", v2: "archived", v3: "candidate"}

    # A new canary replaces the old one; promoting the canary clears the canary slot.
    registry.canary("fraud", v2, 0.1)
    ev = registry.canary("fraud", v3, 0.1)
    assert ev.detail["replaced"] == v2
    registry.promote("fraud", v3)
    d = registry.deployment("fraud")
    assert d.canary is None and d.production is not None and d.production.version == v3
    assert _stages(registry) == {v1: "archived", v2: "archived", v3: "production"}
    assert registry.get("fraud", v3).canary_fraction is None


def test_shadow_and_archive(registry: ModelRegistry, models: list[TrainedModel]) -> None:
    v1, v2, v3 = (_register(registry, m) for m in models)
    registry.shadow("fraud", v2)  # a shadow needs no production
    registry.promote("fraud", v1)
    d = registry.deployment("fraud")
    assert d.shadow is not None and d.shadow.version == v2 and d.shadow.stage == "shadow"
    ev = registry.shadow("fraud", v3)
    assert ev.detail["replaced"] == v2
    assert _stages(registry) == {v1: "production", v2: "archived", v3: "shadow"}
    registry.archive("fraud", v3)
    assert registry.deployment("fraud").shadow is None
    with pytest.raises(ValueError, match="already archived"):
        registry.archive("fraud", v3)
    with pytest.raises(ValueError, match="fraud:1 is in production"):
        registry.archive("fraud", v1)
    # Promoting the shadow clears the shadow slot.
    registry.shadow("fraud", v2)
    registry.promote("fraud", v2)
    d = registry.deployment("fraud")
    assert d.shadow is None and d.production is not None and d.production.version == v2


def test_events_are_emitted_in_order_and_recorded(
    registry: ModelRegistry, models: list[TrainedModel], events: list[ModelEvent]
) -> None:
    v1 = _register(registry, models[0], stage="production")
    v2 = _register(registry, models[1])
    registry.canary(
        "fraud", v2, 0.2, detail={"reason": "retrained on drift alert", "alert": "psi amount 0.4"}
    )
    registry.rollback("fraud")
    registry.shadow("fraud", v2)
    registry.promote("fraud", v2)
    registry.rollback("fraud")
    v3 = _register(registry, models[2])
    registry.archive("fraud", v3, detail={"reason": "superseded"})
    assert [(e.kind, e.version, e.stage) for e in events] == [
        ("registered", v1, "candidate"),
        ("promoted", v1, "production"),
        ("registered", v2, "candidate"),
        ("canary_started", v2, "canary"),
        ("rolled_back", v2, "archived"),
        ("shadow_started", v2, "shadow"),
        ("promoted", v2, "production"),
        ("rolled_back", v2, "archived"),
        ("registered", v3, "candidate"),
        ("archived", v3, "archived"),
    ]
    assert events[0].detail["sha256"] == models[0].sha256
    assert events[0].detail["metrics"] == models[0].training.metrics
    assert events[1].detail["previous_production"] is None
    canary = events[3]
    assert canary.fraction == 0.2 and canary.detail["production"] == v1
    assert canary.detail["reason"] == "retrained on drift alert"
    assert events[6].detail["previous_production"] == v1 and events[6].detail["from_stage"] == "shadow"
    assert events[7].detail["restored"] == v1
    assert events[9].detail == {"from_stage": "candidate", "reason": "superseded"}
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert registry.history("fraud") == events


def test_tampered_or_missing_artifact_is_refused(
    registry: ModelRegistry, models: list[TrainedModel], client: redis.Redis
) -> None:
    v1 = _register(registry, models[0], stage="production")
    key = registry.artifact_key(models[0].sha256)
    data = bytearray(models[0].onnx_bytes)
    data[len(data) // 2] ^= 0x01
    client.set(key, bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"fraud:{v1}: artifact sha256 mismatch") as info:
        registry.load("fraud")
    assert models[0].sha256 in str(info.value)
    client.delete(key)
    with pytest.raises(ModelIntegrityError, match="missing from Redis"):
        registry.load("fraud", v1)


def test_unknown_names_and_versions(registry: ModelRegistry, models: list[TrainedModel]) -> None:
    with pytest.raises(LookupError, match=r"unknown model 'nope' \(registered: none\)"):
        registry.get("nope")
    with pytest.raises(LookupError, match="unknown model 'nope'"):
        registry.load("nope", 1)
    _register(registry, models[0])
    with pytest.raises(LookupError, match=r"model 'fraud' has no version 9 \(versions: 1\)"):
        registry.get("fraud", 9)
    with pytest.raises(LookupError, match="no version 9"):
        registry.load("fraud", 9)
    with pytest.raises(LookupError, match="no version 9"):
        registry.promote("fraud", 9)
    with pytest.raises(LookupError, match=r"unknown model 'nope' \(registered: fraud\)"):
        registry.canary("nope", 1, 0.5)
    assert registry.versions("nope") == []
    d = registry.deployment("nope")  # the worker may start before any model exists
    assert (d.production, d.canary, d.shadow, d.canary_fraction) == (None, None, None, 0.0)


def test_concurrent_lifecycle_changes_stay_consistent(
    registry: ModelRegistry, models: list[TrainedModel], events: list[ModelEvent]
) -> None:
    versions = [_register(registry, models[i % 3]) for i in range(6)]
    registry.promote("fraud", versions[0])
    clients = [redis.Redis.from_url(Settings().redis_url) for _ in range(4)]
    errors: list[BaseException] = []
    succeeded: Counter[str] = Counter()
    refused: Counter[str] = Counter()

    def churn(i: int) -> None:
        reg = ModelRegistry(clients[i], registry.namespace, on_event=events.append)
        for step in range(15):
            v = versions[(i + step) % len(versions)]
            kind = ("promote", "canary", "rollback")[step % 3]
            try:
                if kind == "promote":
                    reg.promote("fraud", v)
                elif kind == "canary":
                    reg.canary("fraud", v, 0.1 + 0.1 * i)
                else:
                    reg.rollback("fraud")
                succeeded[kind] += 1
            except ValueError:
                refused[kind] += 1  # e.g. promoting what another thread just promoted
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # The churn changed things: each kind of operation went through, most of them did.
    assert all(succeeded[k] >= 1 for k in ("promote", "canary", "rollback")), (succeeded, refused)
    assert sum(succeeded.values()) > sum(refused.values()), (succeeded, refused)
    stages = _stages(registry)
    d = registry.deployment("fraud")
    assert d.production is not None
    assert [v for v, s in stages.items() if s == "production"] == [d.production.version]
    assert [v for v, s in stages.items() if s == "canary"] == ([d.canary.version] if d.canary else [])
    # Every committed change is in the history exactly once, in one order all processes agree on.
    assert len(registry.history("fraud")) == len(events)
