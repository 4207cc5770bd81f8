"""The HTTP API as `driftline api` wires it: readiness across a Redis outage (a private
redis-server), predictions through the real online store, drift statistics and alerts written by
the worker's drift stage."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from detectors.incidents import split_outputs
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import build_api, model_registry
from feature_store.definitions import fraud_feature_view
from feature_store.online import OnlineStore
from inference.metadata import ModelVersion
from inference.session import ModelSession
from inference.training import TrainedModel, register_trained, train_model
from stream.drift import DriftConfig, DriftStage

pytestmark = pytest.mark.integration

VIEW = fraud_feature_view()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, without persistence, that can be stopped and restarted."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make setup installs it)")
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    data = synthetic_training_set(2000, seed=0, view=VIEW)
    return train_model(data.numeric, data.categorical, data.labels, data.ts, seed=0)


def register(s: Settings, trained: TrainedModel) -> ModelVersion:
    return register_trained(model_registry(s, publish=False), "fraud", trained, "production")


def test_readyz_follows_redis_down_and_back(
    stack_settings: Settings, private_redis: PrivateRedis, trained: TrainedModel
) -> None:
    s = stack_settings.model_copy(update={"redis_url": private_redis.url})
    client = TestClient(build_api(s), raise_server_exceptions=False)
    register(s, trained)

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "kafka": "ok", "model fraud": "ok: fraud:1"}

    private_redis.stop()
    down = client.get("/readyz")  # answers (the checks time out; the test's timeout catches a hang)
    assert down.status_code == 503, down.text
    body = down.json()
    assert body["error"]["code"] == "not_ready" and "redis failed" in body["error"]["message"]
    assert body["checks"]["redis"].startswith("failed") and body["checks"]["kafka"] == "ok"
    assert client.get("/healthz").json() == {"status": "ok"}  # alive all along
    predict = client.post("/predict", json={"entity_id": "card-1", "features": {}})
    assert predict.status_code == 503 and predict.json()["error"]["code"] == "unavailable"

    private_redis.start()  # same port, empty: no persistence
    empty = client.get("/readyz")
    assert empty.status_code == 503
    assert empty.json()["checks"]["redis"] == "ok"
    assert empty.json()["checks"]["model fraud"] == "failed: no production version"
    register(s, trained)
    again = client.get("/readyz")
    assert again.status_code == 200, again.text


def test_predict_reads_the_online_store_and_drift_and_alerts_come_from_redis(
    stack_settings: Settings, trained: TrainedModel, new_prefix: Callable[[str], str]
) -> None:
    s = stack_settings.model_copy(update={"topic_prefix": new_prefix("api")})
    meta = register(s, trained)
    r = redis.Redis.from_url(s.redis_url)
    t0 = 1_700_000_040.0
    OnlineStore(r, s.topic_prefix, VIEW).write_batch(
        ["card-7"] * 3,
        [t0, t0 + 60, t0 + 120],
        {"amount": [10.0, 20.0, 30.0], "merchant_category": ["grocery", "travel", "grocery"]},
        partitions=[0, 0, 0],
        offsets=[0, 1, 2],
        source=f"{s.topic_prefix}.events",
    )
    token = uuid.uuid4().hex
    client = TestClient(build_api(s.model_copy(update={"api_token": SecretStr(token)})))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        resp = client.post(
            "/predict", json={"entity_id": "card-7", "features": {"amount": 99.0}}, headers=auth
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        used = body["features"]
        assert (body["model"], body["version"], body["arm"]) == ("fraud", meta.version, "production")
        assert used["count_1h"] == 3.0 and used["amount_sum_1h"] == 60.0 and used["amount_last"] == 30.0
        assert used["amount"] == 99.0 and used["merchant_category"] == "grocery"
        direct = ModelSession.open(trained.onnx_bytes, trained.features)
        assert body["score"] == pytest.approx(
            float(direct.score_events({k: [v] for k, v in used.items()}, 1)[0])
        )
        entity = client.get("/features/card-7", headers=auth).json()
        assert entity["events"] == 3 and entity["values"]["count_24h"] == 3.0
        assert client.get("/features/card-8", headers=auth).status_code == 404

        # The worker's drift stage: a window of shifted amounts closes, its statistics and alert
        # land in Redis, and the API reads both from there.
        stage = DriftStage(
            r,
            s.topic_prefix,
            CollectorRegistry(),
            DriftConfig(
                window_seconds=60,
                allowed_lateness=0,
                idle_timeout_seconds=None,
                ks_sample_rate=1.0,
                min_window_events=0,  # its one window of 399 events closes on event time alone
            ),
            monitored={"amount"},
            worker_id="w1",
        )
        stage.set_partitions([0])
        n = 400
        rng = np.random.default_rng(0)
        amounts = (rng.lognormal(3.5, 0.8, n) * 20).tolist()  # far above the training amounts
        ts = np.concatenate([np.linspace(t0, t0 + 50, n - 1), [t0 + 200]])
        alerts, events = split_outputs(
            stage.observe(
                meta,
                {"amount": amounts},
                np.arange(n),
                rng.uniform(0, 1, n),
                ts,
                np.zeros(n, dtype=np.int64),
                np.arange(n, dtype=np.int64),
            )
        )
        assert alerts, "the shifted window should raise an alert"
        assert [e.kind for e in events] == ["opened"]

        stats = client.get("/drift", headers=auth).json()["stats"]
        by_detector = {(x["detector"], x["feature"]): x for x in stats if x["version"] == meta.version}
        psi = by_detector[("psi", "amount")]
        assert psi["above_threshold"] and psi["statistic"] > psi["threshold"] and psi["n_window"] == n - 1
        assert ("ks", "amount") in by_detector and ("psi", "__score__") in by_detector

        listed = client.get("/alerts", headers=auth).json()["alerts"]
        assert {a["id"] for a in listed} == {a.id for a in alerts}
        critical = client.get("/alerts", params={"severity": "critical"}, headers=auth).json()["alerts"]
        assert {a["id"] for a in critical} == {a.id for a in alerts if a.severity == "critical"}
        later = client.get("/alerts", params={"since": time.time() + 60}, headers=auth).json()["alerts"]
        assert later == []
        # The incident they opened, with its evidence.
        found = client.get("/incidents", params={"state": "open"}, headers=auth).json()["incidents"]
        assert [i["id"] for i in found] == [events[0].incident_id]
        one = client.get(f"/incidents/{events[0].incident_id}", headers=auth).json()
        assert one["model"] == meta.name and "amount" in {f["feature"] for f in one["features"]}
        assert client.get("/drift").status_code == 401
    finally:
        for key in r.scan_iter(match=f"*{s.topic_prefix}:*", count=1000):
            r.delete(key)
