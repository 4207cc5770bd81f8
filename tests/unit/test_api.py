"""The HTTP API on fakes: a real small ONNX model behind a fake registry, no services."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from driftline.training_data import synthetic_training_set
from feature_store.definitions import fraud_feature_view
from feature_store.online import EntityFeatures
from inference.api import ApiDeps, DriftStat, create_app
from inference.metadata import Deployment, ModelEvent, ModelVersion, Stage
from inference.routing import entity_buckets
from inference.session import ModelSession, sha256_hex
from inference.training import TrainedModel, train_model

TOKEN = "s3cret-token"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    data = synthetic_training_set(2000, 0, view=fraud_feature_view())
    return train_model(data.numeric, data.categorical, data.labels, data.ts, seed=0)


def version(t: TrainedModel, v: int, stage: Stage, fraction: float | None = None) -> ModelVersion:
    return ModelVersion(
        name="fraud",
        version=v,
        sha256=sha256_hex(t.onnx_bytes),
        features=t.features,
        input_name=ModelSession.open(t.onnx_bytes, t.features).input_name,
        created_at=NOW,
        stage=stage,
        canary_fraction=fraction,
        training=t.training,
        reference=t.reference,
        score_reference=t.score_reference,
    )


@dataclass
class FakeRegistry:
    artifacts: dict[str, bytes]
    production: ModelVersion | None = None
    canary: ModelVersion | None = None
    fraction: float = 0.0
    events: list[ModelEvent] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)

    def _all(self) -> list[ModelVersion]:
        return [v for v in (self.production, self.canary) if v is not None]

    def names(self) -> list[str]:
        return ["fraud"] if self._all() or self.events else []

    def deployment(self, name: str) -> Deployment:
        mine = name == "fraud"
        return Deployment(
            name=name,
            production=self.production if mine else None,
            canary=self.canary if mine else None,
            canary_fraction=self.fraction if mine and self.canary else 0.0,
            shadow=None,
        )

    def versions(self, name: str) -> list[ModelVersion]:
        return sorted(self._all(), key=lambda v: v.version) if name == "fraud" else []

    def history(self, name: str) -> list[ModelEvent]:
        return list(self.events) if name == "fraud" else []

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, ModelSession]:
        meta = next(v for v in self._all() if v.version == version)
        self.loads.append(meta.ref)
        return meta, ModelSession.load(meta, self.artifacts[meta.sha256])


class FakeFeatures:
    def __init__(self, records: dict[str, dict[str, float | str | None]]) -> None:
        self.records = records

    def describe(self, entity_id: str) -> EntityFeatures | None:
        values = self.records.get(entity_id)
        if values is None:
            return None
        return EntityFeatures(
            view="fraud", entity_id=entity_id, as_of=NOW, updated_at=NOW, events=3, values=values
        )


STORED: dict[str, float | str | None] = {
    "amount": 1.0,
    "merchant_category": "grocery",
    "count_10m": 2.0,
    "count_1h": 7.0,
    "amount_mean_1h": 45.5,
    "amount_last": 12.0,
}
REQUEST = {"amount": 812.5, "hour": 3.0, "merchant_risk": 0.9, "country": "US", "device_trust_score": None}


@dataclass
class Api:
    client: TestClient
    registry: FakeRegistry
    calls: dict[str, Any]


def make_api(
    trained: TrainedModel,
    token: str | None = None,
    production: bool = True,
    checks: dict[str, Callable[[], bool]] | None = None,
    drift: Callable[[], list[DriftStat]] | None = None,
    max_body_bytes: int = 65536,
) -> Api:
    registry = FakeRegistry(
        {sha256_hex(trained.onnx_bytes): trained.onnx_bytes},
        production=version(trained, 1, "production") if production else None,
    )
    if not production:
        registry.events.append(
            ModelEvent(kind="registered", name="fraud", version=1, stage="candidate", ts=NOW)
        )
    calls: dict[str, Any] = {}

    def alerts(since: float | None, severity: str | None) -> list[dict[str, Any]]:
        calls["alerts"] = (since, severity)
        return [{"id": "a1", "severity": "critical", "feature": "amount"}]

    stat = DriftStat(
        model="fraud", version=1, detector="psi", feature="amount", statistic=0.31, threshold=0.2,
        window_end_ts=1.7e9, window_end_index=5, n_window=1000,
    )  # fmt: skip
    deps = ApiDeps(
        registry=registry,
        features=FakeFeatures({"card-1": dict(STORED)}),
        drift=drift or (lambda: [stat]),
        alerts=alerts,
        incidents=lambda: [dict(i) for i in INCIDENTS],
        checks=checks if checks is not None else {"redis": lambda: True, "kafka": lambda: True},
        prometheus=CollectorRegistry(),
        token=token,
        max_body_bytes=max_body_bytes,
    )
    client = TestClient(create_app(deps), raise_server_exceptions=False)
    return Api(client, registry, calls)


@pytest.fixture
def api(trained: TrainedModel) -> Iterator[Api]:
    made = make_api(trained)
    with made.client:
        yield made


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", "field"}} and no stack trace."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body["error"]) == {"code", "message", "field"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


# -- /predict --------------------------------------------------------------------------------------


def test_predict_scores_request_features_plus_stored_aggregates(api: Api, trained: TrainedModel) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": REQUEST})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["version"], body["arm"]) == ("fraud", 1, "production")
    used = body["features"]
    assert list(used) == [f.name for f in trained.features]  # every model input, in order
    assert used["count_1h"] == 7.0 and used["amount_mean_1h"] == 45.5  # from the online store
    assert used["amount"] == 812.5  # the request wins over the stored passthrough value (1.0)
    assert used["merchant_category"] == "grocery"  # not in the request: the entity's latest
    assert used["device_trust_score"] is None and used["count_24h"] is None  # missing: fill value

    # The score is the model's on exactly these inputs, and different from the stored-only one.
    direct = ModelSession.open(trained.onnx_bytes, trained.features)
    expected = direct.score_events({k: [v] for k, v in used.items()}, 1)[0]
    assert body["score"] == pytest.approx(float(expected), rel=1e-6)
    assert body["class"] == int(body["score"] >= 0.5)
    stored_only = direct.score_events({k: [STORED.get(k)] for k in used}, 1)[0]
    assert abs(float(stored_only) - body["score"]) > 1e-6


def test_predict_unknown_entity_uses_request_features_only(api: Api) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-new", "features": REQUEST})
    assert resp.status_code == 200, resp.text
    assert resp.json()["features"]["count_1h"] is None


def test_predict_loads_each_version_once(api: Api) -> None:
    for _ in range(3):
        assert (
            api.client.post("/predict", json={"entity_id": "card-1", "features": REQUEST}).status_code == 200
        )
    assert api.registry.loads == ["fraud:1"]


def test_predict_routes_the_canary_like_the_worker(trained: TrainedModel) -> None:
    made = make_api(trained)
    made.registry.canary = version(trained, 2, "canary", 0.5)
    made.registry.fraction = 0.5
    ids = [f"card-{i}" for i in range(40)]
    buckets = entity_buckets(ids)
    arms = {}
    for entity, bucket in zip(ids, buckets.tolist(), strict=True):
        body = made.client.post("/predict", json={"entity_id": entity, "features": REQUEST}).json()
        arms[entity] = (body["arm"], body["version"])
        assert arms[entity] == (("canary", 2) if bucket < 0.5 else ("production", 1))
    assert {a for a, _ in arms.values()} == {"canary", "production"}


def test_string_where_a_number_belongs_is_a_422_naming_the_field(api: Api) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {"amount": "12.5"}})
    error = assert_error(resp, 422, "invalid_feature")
    assert error["field"] == "features.amount"
    assert "features.amount" in error["message"] and "number" in error["message"]


def test_number_where_a_category_belongs_is_a_422(api: Api) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {"country": 49}})
    assert assert_error(resp, 422, "invalid_feature")["field"] == "features.country"


def test_boolean_where_a_number_belongs_is_a_422(api: Api) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {"amount": True}})
    error = assert_error(resp, 422, "invalid_feature")
    assert error["message"] == "features.amount: fraud:1 expects a number (or null), got a boolean"


@pytest.mark.parametrize("value", [[1, 2], {"x": 1}])
def test_values_outside_the_contract_are_refused(api: Api, value: object) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {"amount": value}})
    error = assert_error(resp, 422, "invalid_request")
    assert error["field"] == "features.amount"
    assert error["message"] == "features.amount: must be a number, a boolean, a string or null"


def test_unknown_feature_and_unknown_top_level_field_are_refused(api: Api) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {"amonut": 3}})
    assert assert_error(resp, 422, "unknown_feature")["field"] == "features.amonut"
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {}, "debug": True})
    assert assert_error(resp, 422, "invalid_request")["field"] == "debug"
    resp = api.client.post("/predict", json={"features": {}})
    assert assert_error(resp, 422, "invalid_request")["field"] == "entity_id"


def test_malformed_json_is_a_422_in_the_same_shape(api: Api) -> None:
    resp = api.client.post(
        "/predict", content=b'{"entity_id": ', headers={"content-type": "application/json"}
    )
    assert assert_error(resp, 422, "invalid_json")["field"] is None


def test_unknown_model_is_404_and_no_production_is_503(api: Api, trained: TrainedModel) -> None:
    resp = api.client.post("/predict", json={"entity_id": "card-1", "features": {}, "model": "nope"})
    assert "nope" in assert_error(resp, 404, "unknown_model")["message"]
    resp = api.client.post("/predict", json={"entity_id": "card-1", "model": "bad name!"})
    assert assert_error(resp, 422)["field"] == "model"
    without = make_api(trained, production=False)
    resp = without.client.post("/predict", json={"entity_id": "card-1", "features": {}})
    assert "no production version" in assert_error(resp, 503, "no_production_version")["message"]


# -- auth, limits, errors --------------------------------------------------------------------------


def test_bearer_token(trained: TrainedModel) -> None:
    client = make_api(trained, token=TOKEN).client
    body = {"entity_id": "card-1", "features": REQUEST}
    missing = client.post("/predict", json=body)
    assert assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert_error(wrong, 401, "unauthorized")
    assert_error(client.get("/models", headers={"Authorization": f"Basic {TOKEN}"}), 401)
    assert_error(client.get("/metrics"), 401)
    ok = client.post("/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200, ok.text
    assert client.get("/features/card-1", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Probes need no token.
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_bodies_over_the_limit_are_413(trained: TrainedModel) -> None:
    client = make_api(trained, max_body_bytes=1024).client
    big = {"entity_id": "card-1", "features": {f"f{i}": i for i in range(200)}}
    assert_error(client.post("/predict", json=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes actually read count
        yield b'{"entity_id": "card-1", "features": {'
        for i in range(200):
            yield b'"f%d": %d, ' % (i, i)
        yield b'"g": 1}}'

    resp = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413, "payload_too_large")
    small = client.post("/predict", json={"entity_id": "card-1", "features": REQUEST})
    assert small.status_code == 200, small.text


def test_unexpected_failure_is_a_logged_500_without_trace(
    trained: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[DriftStat]:
        raise RuntimeError("secret internal detail")

    client = make_api(trained, drift=broken).client
    resp = client.get("/drift")
    error = assert_error(resp, 500, "internal_error")
    assert "secret" not in resp.text and error["field"] is None
    assert any("secret internal detail" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_framework_errors_share_the_shape(api: Api) -> None:
    assert_error(api.client.get("/nowhere"), 404, "not_found")
    assert_error(api.client.delete("/predict"), 405, "method_not_allowed")
    assert_error(api.client.get("/alerts", params={"since": "yesterday"}), 422, "invalid_request")
    assert api.client.get("/alerts", params={"since": "yesterday"}).json()["error"]["field"] == "since"


# -- reads -----------------------------------------------------------------------------------------


def test_features_of_an_entity(api: Api) -> None:
    body = api.client.get("/features/card-1").json()
    assert body["entity_id"] == "card-1" and body["values"]["count_1h"] == 7.0 and body["events"] == 3
    error = assert_error(api.client.get("/features/card-404"), 404, "unknown_entity")
    assert error["message"] == "no features for entity card-404"


def test_models_and_model(api: Api) -> None:
    assert api.client.get("/models").json() == {
        "models": [{"name": "fraud", "production": 1, "canary": None, "canary_fraction": 0.0, "shadow": None}]
    }
    resp = api.client.get("/models/fraud")
    body = resp.json()
    assert [v["version"] for v in body["versions"]] == [1] and body["versions"][0]["stage"] == "production"
    assert "reference" not in resp.text and "sample" not in resp.text  # no reference samples
    assert_error(api.client.get("/models/other"), 404, "unknown_model")


def test_drift_and_alerts(api: Api) -> None:
    stats = api.client.get("/drift").json()["stats"]
    assert stats == [
        {
            "model": "fraud", "version": 1, "detector": "psi", "feature": "amount", "statistic": 0.31,
            "threshold": 0.2, "p_value": None, "window_end_ts": 1.7e9, "window_end_index": 5,
            "n_window": 1000, "window_start_ts": None, "above_threshold": True,
        }
    ]  # fmt: skip
    resp = api.client.get("/alerts", params={"since": 1.7e9, "severity": "critical"})
    assert resp.json()["alerts"][0]["id"] == "a1"
    assert api.calls["alerts"] == (1.7e9, "critical")
    api.client.get("/alerts")
    assert api.calls["alerts"] == (None, None)
    assert_error(api.client.get("/alerts", params={"severity": "info"}), 422)


INCIDENTS = [
    {"id": "i-old", "model": "fraud", "state": "resolved", "opened_at": "2023-11-14T22:00:00Z"},
    {"id": "i-new", "model": "fraud", "state": "open", "opened_at": "2023-11-15T10:00:00Z"},
    {"id": "i-other", "model": "churn", "state": "open", "opened_at": "2023-11-15T09:00:00Z"},
]


def test_incidents_are_listed_newest_first_filtered_and_found_by_id(api: Api) -> None:
    def ids(**params: Any) -> list[str]:
        resp = api.client.get("/incidents", params=params)
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()["incidents"]]

    assert ids() == ["i-new", "i-other", "i-old"]
    assert ids(state="open") == ["i-new", "i-other"]
    assert ids(model="fraud") == ["i-new", "i-old"]
    assert ids(since=1.7e9 + 30_000) == ["i-new", "i-other"]  # opened at or after 2023-11-14T22:13Z
    assert api.client.get("/incidents/i-old").json()["state"] == "resolved"
    assert_error(api.client.get("/incidents/nope"), 404, "unknown_incident")
    assert_error(api.client.get("/incidents", params={"state": "closed"}), 422)


# -- health and metrics ----------------------------------------------------------------------------


def test_readyz_names_the_failed_check(trained: TrainedModel) -> None:
    def down() -> bool:
        raise ConnectionError("Connection refused")

    client = make_api(trained, checks={"redis": down, "kafka": lambda: True}).client
    resp = client.get("/readyz")
    error = assert_error(resp, 503, "not_ready")
    assert "redis" in error["message"] and "kafka" not in error["message"]
    assert resp.json()["checks"]["kafka"] == "ok"
    assert client.get("/healthz").status_code == 200  # alive, though not ready

    ready = make_api(trained).client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["model fraud"] == "ok: fraud:1"
    unready = make_api(trained, production=False).client.get("/readyz")
    assert "model fraud failed: no production version" in assert_error(unready, 503)["message"]


def test_metrics_count_requests_by_route(api: Api) -> None:
    api.client.post("/predict", json={"entity_id": "card-1", "features": REQUEST})
    api.client.get("/features/card-1")
    api.client.get("/features/card-2")
    text = api.client.get("/metrics").text
    assert 'driftline_api_requests_total{method="GET",route="/features/{entity_id}",status="200"} 1.0' in text
    assert 'driftline_api_requests_total{method="GET",route="/features/{entity_id}",status="404"} 1.0' in text
    assert 'driftline_api_request_seconds_count{method="POST",route="/predict"} 1.0' in text
    assert 'driftline_api_predictions_total{arm="production",model="fraud",version="1"} 1.0' in text
    assert "card-1" not in text


def test_openapi_docs(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/features/{entity_id}", "/models", "/drift", "/alerts", "/readyz"} <= set(paths)


def test_redis_down_is_503_with_retry_after(trained: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_api(trained, checks={"redis": lambda: True, "kafka": lambda: True})

    def refused(_entity_id: str) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(FakeFeatures, "describe", lambda _self, e: refused(e))
    resp = made.client.get("/features/card-1")
    assert_error(resp, 503, "unavailable")
    assert resp.headers["Retry-After"] == "5"

    def down() -> bool:
        raise redis.ConnectionError("Connection refused")

    unready = make_api(trained, checks={"redis": down, "kafka": lambda: True}).client.get("/readyz")
    assert_error(unready, 503, "not_ready")
    assert unready.headers["Retry-After"] == "5"


def test_no_body_carries_exception_text(
    trained: TrainedModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed check or a Redis error is logged with its cause; the answer only names it."""
    cause = "Error 111 connecting to redis://worker:hunter2@10.0.0.7:6379"

    def down() -> bool:
        raise redis.ConnectionError(cause)

    made = make_api(trained, checks={"redis": down, "kafka": lambda: True})
    monkeypatch.setattr(FakeFeatures, "describe", lambda _self, _e: down())
    monkeypatch.setattr(FakeRegistry, "deployment", lambda _self, _name: down())
    with caplog.at_level(logging.WARNING, logger="driftline.api"):
        unready = made.client.get("/readyz")
        features = made.client.get("/features/card-1")
    assert_error(unready, 503, "not_ready")
    assert unready.json()["checks"] == {
        "redis": "failed: unavailable",
        "kafka": "ok",
        "model fraud": "failed: does not load (see the API log)",
    }
    assert assert_error(features, 503, "unavailable")["message"] == "Redis unavailable"
    for resp in (unready, features):
        assert "hunter2" not in resp.text and "ConnectionError" not in resp.text and "111" not in resp.text
    assert cause in caplog.text  # the operator still learns why
