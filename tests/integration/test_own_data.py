"""A user's own data on the first try: their features (not the fraud view's), booleans, a YAML
view over their columns, a view switch with a promotion, and the input contract in the worker.

The data set is scikit-learn's bundled breast-cancer table (`tests/own_data.py`), exported with a
boolean and a categorical column. The worker runs with the default `DRIFTLINE_FEATURE_VIEW`
(`fraud`): every version here records its own view, so that setting must not matter.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from detectors.alerts import DriftAlert
from detectors.signals import SCORE_FEATURE
from driftline.produce import produce_file
from driftline.report import gather, render
from driftline.settings import Settings
from driftline.wiring import model_registry, redis_client, registered_versions
from feature_store.definitions import FeatureView, fraud_feature_view
from feature_store.historical import replay
from inference.encoding import encode_features
from inference.metadata import ModelVersion
from stream.drift import recent_alerts
from stream.event_log import read_event_log
from stream.topics import Topics
from tests.helpers import run_cli
from tests.integration.worker_support import dlq, drain, predictions, start_worker, wait_until
from tests.own_data import BOOLEAN, CATEGORICAL, NUMERIC, OWN_FEATURES, own_events, write_csv, write_jsonl

pytestmark = pytest.mark.integration

# The fraud view's features (its event counts, count_10m ..., are generic names any view may use).
FRAUD_NAMES = {n for n in fraud_feature_view().feature_names() if not n.startswith("count_")}
MODEL = "cancer"
YAML_VIEW = """
name: cancer-agg
passthrough: [mean_radius, mean_texture, mean_smoothness, worst_area, irregular, size_band]
categorical: [size_band]
aggregations:
  - {function: count, windows: [1h]}
  - {function: mean, source: mean_radius, windows: [1h, 24h]}
  - {function: max, source: worst_area, windows: [24h]}
  - {function: sum, source: irregular, windows: [24h]}
"""


@pytest.fixture
def env(own_settings: Settings, cli_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment for this test's own topics."""
    return {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}


def _cli(env: dict[str, str], *args: str) -> str:
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _train(env: dict[str, str], tmp_path: Path, n: int, *args: str) -> str:
    """`driftline train` on `n` of the data set's events, as MODEL, with more options `args`."""
    train = write_jsonl(tmp_path / "train.jsonl", own_events(n, seed=0))
    return _cli(env, "train", "--file", str(train), "--label-field", "label", "--name", MODEL, *args)


def _alerts(s: Settings) -> list[DriftAlert]:
    versions = registered_versions(model_registry(s, publish=False))
    raw = recent_alerts(redis_client(s), s.topic_prefix, versions)
    return [DriftAlert.model_validate_json(x) for x in raw]


def _produce(s: Settings, path: Path) -> None:
    tally = produce_file(s, path, "label", Console(quiet=True))
    assert tally.failed == 0 and tally.delivered == tally.sent


@pytest.mark.slow
def test_own_data_end_to_end_alerts_on_its_own_feature(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    s = own_settings.model_copy(update={"drift_window_seconds": 300.0})
    train_jsonl = write_jsonl(tmp_path / "train.jsonl", own_events(3000, seed=0))
    train_csv = write_csv(tmp_path / "train.csv", own_events(3000, seed=0))

    inferred = _cli(env, "schema", "infer", str(train_csv), "--out", str(tmp_path / "view.yaml"))
    for name, kind in [("mean_texture", "numeric"), (BOOLEAN, "boolean"), (CATEGORICAL, "categorical")]:
        assert re.search(rf"│ {name}\s+│ {kind}\s+│ 0\.0%\s+│", inferred), name
    assert "--label-field label" in inferred  # the label-like column is pointed out
    starter = FeatureView.from_file(tmp_path / "view.yaml")
    assert set(starter.passthrough) == set(OWN_FEATURES) and not set(starter.feature_names()) & FRAUD_NAMES

    trained = _cli(env, "train", "--file", str(train_jsonl), "--label-field", "label", "--name", MODEL)
    assert "irregular" in trained and "boolean" in trained  # the inputs found, before training
    _cli(env, "train", "--file", str(train_csv), "--label-field", "label", "--name", "cancer-csv")
    registry = model_registry(s, publish=False)
    meta, from_csv = registry.get(MODEL), registry.get("cancer-csv")
    assert meta.inputs is not None and meta.inputs.view.kind == "none"
    assert {f.name: f.kind for f in meta.features} == {
        **dict.fromkeys(NUMERIC, "numeric"),
        BOOLEAN: "boolean",
        CATEGORICAL: "categorical",
    }
    assert meta.features == from_csv.features  # JSONL and CSV read alike, booleans included
    assert not {f.name for f in meta.features} & FRAUD_NAMES and not set(meta.reference) & FRAUD_NAMES
    assert meta.reference[BOOLEAN].kind == "categorical" and set(meta.reference[BOOLEAN].frequencies) == {
        "true",
        "false",
    }
    shown = _cli(env, "models", "show", MODEL)
    assert "feature view: none" in shown and "input contract" in shown

    stream = write_jsonl(tmp_path / "stream.jsonl", own_events(4000, seed=1, shift_at=2000))
    _cli(env, "produce", "--file", str(stream), "--label-field", "label")
    running = start_worker(s, model=MODEL)
    try:
        wait_until(lambda: any(a.feature == "mean_texture" for a in _alerts(s)), timeout=240, every=1.0)
        wait_until(lambda: len(predictions(s, 4000, timeout=5)) >= 4000, timeout=120, every=1.0)
    finally:
        running.stop()
    alerts = _alerts(s)
    texture = [a for a in alerts if a.feature == "mean_texture"]
    assert texture and all(a.model == MODEL for a in alerts)
    assert min(a.window_start_ts for a in texture if a.window_start_ts) >= 1.7e9 + 2000 * 0.5 - 300
    assert not {a.feature for a in alerts} & FRAUD_NAMES
    preds = predictions(s, 4000)
    assert {p["model"] for p in preds} == {MODEL} and len({p["event_id"] for p in preds}) == 4000
    data = gather(s, MODEL)
    assert set(data.current) == set(OWN_FEATURES) and {a.feature for a in data.alerts} >= {"mean_texture"}
    charted = {w.feature for vw in data.windows for w in vw.windows} | {a.feature for a in data.alerts}
    assert charted <= {*OWN_FEATURES, SCORE_FEATURE} and "mean_texture" in render(data)


def _served_features(s: Settings, n: int, version: int | None = None) -> list[dict[str, Any]]:
    return [p for p in predictions(s, n) if p["served"] and (version is None or p["version"] == version)]


def _assert_zero_skew(s: Settings, view: FeatureView, preds: list[dict[str, Any]]) -> None:
    history = replay(view, list(read_event_log(s.kafka_client_config(), Topics(s.topic_prefix).events)))
    keys = [(p["source_partition"], p["source_offset"]) for p in preds]
    expected = history.features_for(keys)
    index = {name: j for j, name in enumerate(history.feature_names)}
    rows = history.index(keys).tolist()
    for p, row, i in zip(preds, expected, rows, strict=True):
        for name, served in p["features"].items():
            if name in history.categorical:
                assert served == history.categorical[name][i], name
                continue
            want = float(row[index[name]])
            got = math.nan if served is None else float(served)
            assert (math.isnan(want) and math.isnan(got)) or abs(want - got) <= 1e-9, (name, want, got)


def _train_with_view(env: dict[str, str], s: Settings, tmp_path: Path, n: int) -> ModelVersion:
    (tmp_path / "view.yaml").write_text(YAML_VIEW)
    _train(env, tmp_path, n, "--feature-view", str(tmp_path / "view.yaml"))
    return model_registry(s, publish=False).get(MODEL)


def test_yaml_view_over_own_columns_serves_what_training_computed(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    s = own_settings
    meta = _train_with_view(env, s, tmp_path, 2000)
    view = FeatureView.from_yaml(YAML_VIEW)
    assert meta.inputs is not None and meta.inputs.view.fingerprint == view.fingerprint()
    assert {f.name for f in meta.features} == set(view.feature_names())
    assert {r.name: r.kind for r in meta.inputs.raw}[BOOLEAN] == "boolean"

    _produce(s, write_jsonl(tmp_path / "serve.jsonl", own_events(1500, seed=2, start=1.7e9 + 5000)))
    running = start_worker(s, model=MODEL, attach_features=True)
    drain(s, running, timeout=180)  # every event committed: no idle wait
    preds = _served_features(s, 1500)
    assert len(preds) == 1500
    assert set(preds[0]["features"]) == set(view.feature_names())
    assert max(p["features"]["count_1h"] for p in preds) > 3  # aggregates of the entity's events
    _assert_zero_skew(s, view, preds)
    shown = _cli(env, "features", "get", preds[0]["entity_id"], "--model", MODEL, "--json")
    assert orjson.loads(shown)["view"] == "cancer-agg"  # the version's own view's store

    (tmp_path / "edited.yaml").write_text(YAML_VIEW.replace("windows: [1h]", "windows: [2h]"))
    args = ["--label-field", "label", "--name", MODEL, "--feature-view", str(tmp_path / "edited.yaml")]
    edited = run_cli("train", "--file", str(tmp_path / "train.jsonl"), *args, env=env)
    assert edited.returncode == 1
    assert "feature view 'cancer-agg' is already cancer:1's, with another definition" in edited.stderr


def test_a_view_refers_to_fields_the_events_lack_is_refused(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", own_events(200, seed=0))
    done = run_cli("train", "--file", str(train), "--label-field", "label", "--name", MODEL,
                   "--feature-view", "fraud", env=env)  # fmt: skip
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("driftline: error: feature view 'fraud' reads amount, hour,")
        and "no training" in line
    )


def test_promotion_to_a_version_with_another_view_switches_the_features(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    s = own_settings
    (tmp_path / "view.yaml").write_text(YAML_VIEW)
    train = write_jsonl(tmp_path / "train.jsonl", own_events(2000, seed=0))
    _cli(env, "train", "--file", str(train), "--label-field", "label", "--name", MODEL)  # v1: raw
    _cli(env, "train", "--file", str(train), "--label-field", "label", "--name", MODEL,
         "--stage", "candidate", "--feature-view", str(tmp_path / "view.yaml"))  # fmt: skip
    running = start_worker(s, model=MODEL, attach_features=True)
    try:
        _produce(s, write_jsonl(tmp_path / "a.jsonl", own_events(500, seed=3, start=1.7e9 + 10_000)))
        wait_until(lambda: len(_served_features(s, 500)) >= 500, timeout=120)
        _cli(env, "models", "promote", f"{MODEL}:2")
        wait_until(
            lambda: running.worker.scorer is not None and running.worker.scorer.signature[0] == f"{MODEL}:2"
        )
        later = own_events(500, seed=4, start=1.7e9 + 20_000)
        for e in later:
            e["entity_id"] = e["entity_id"].replace("patient", "later")
        _produce(s, write_jsonl(tmp_path / "b.jsonl", later))
        wait_until(lambda: len(_served_features(s, 1000)) >= 1000, timeout=120)
    finally:
        running.stop()
    preds = _served_features(s, 1000)
    first = [p for p in preds if p["entity_id"].startswith("patient")]
    second = [p for p in preds if p["entity_id"].startswith("later")]
    assert {p["version"] for p in first} == {1} and {p["version"] for p in second} == {2}
    assert all(set(p["features"]) == set(OWN_FEATURES) for p in first)  # A: the raw features
    view = FeatureView.from_yaml(YAML_VIEW)
    assert all(set(p["features"]) == set(view.feature_names()) for p in second)  # B's, from then on
    # The "later" entities' events all came after the switch, so B's store saw all of them: its
    # served features equal a replay of B over the whole log.
    _assert_zero_skew(s, view, second)


def _bad(env: dict[str, str], s: Settings, tmp_path: Path, policy: str) -> list[dict[str, Any]]:
    _train(env, tmp_path, 1000, "--on-wrong-type", policy)
    events = own_events(300, seed=5, start=1.7e9 + 30_000)
    for i, e in enumerate(events):
        if i % 10 == 0:
            e["mean_radius"] = str(e["mean_radius"])  # an upstream change: a number as a string
        if i % 10 == 1:
            del e["worst_area"]  # absent: scored as missing
        if i % 10 == 2:
            e["new_field"] = 1  # unknown to the model: counted only
    _produce(s, write_jsonl(tmp_path / "bad.jsonl", events))
    return events


def _problems(running: Any) -> dict[tuple[str, str], float]:
    out = {}
    for metric in running.worker.metrics.registry.collect():
        if metric.name == "driftline_input_problems":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[(sample.labels["feature"], sample.labels["problem"])] = sample.value
    return out


def test_wrong_typed_input_is_dead_lettered_and_counted(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    s = own_settings
    _bad(env, s, tmp_path, "dead_letter")
    running = start_worker(s, model=MODEL)
    drain(s, running, timeout=180)  # every event committed: no idle wait
    letters = [r.json() for r in dlq(s, 30)]
    assert len(letters) == 30 and {d["reason_code"] for d in letters} == {"feature_type"}
    assert letters[0]["reason"] == (
        f"features.mean_radius: {MODEL}:1 expects a number (numeric), got a string"
    )
    assert len(predictions(s, 270)) == 270
    problems = _problems(running)
    assert problems[("mean_radius", "wrong_type")] == 30
    assert problems[("worst_area", "missing")] == 30
    assert problems[("new_field", "unknown_feature")] == 30


def test_missing_policy_scores_wrong_types_as_missing(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    s = own_settings
    _bad(env, s, tmp_path, "missing")
    running = start_worker(s, model=MODEL, attach_features=True)
    drain(s, running, timeout=180)  # every event committed: no idle wait
    preds = predictions(s, 300)
    assert len(preds) == 300 and not dlq(s, 0, timeout=3)
    as_missing = [p for p in preds if p["features"]["mean_radius"] is None]
    assert len(as_missing) == 30
    problems = _problems(running)
    assert problems[("mean_radius", "wrong_type")] == 30 and problems[("worst_area", "missing")] == 30


def test_true_false_encode_identically_in_worker_api_and_replay(
    own_settings: Settings, tmp_path: Path, env: dict[str, str]
) -> None:
    from fastapi.testclient import TestClient

    from driftline.wiring import build_api

    s = own_settings
    meta = _train_with_view(env, s, tmp_path, 1000)
    events = own_events(200, seed=6, start=1.7e9 + 40_000)
    assert {e[BOOLEAN] for e in events} == {True, False}
    _produce(s, write_jsonl(tmp_path / "serve.jsonl", events))
    running = start_worker(s, model=MODEL, attach_features=True)
    drain(s, running, timeout=180)  # every event committed: no idle wait
    preds = sorted(_served_features(s, 200), key=lambda p: p["event_id"])
    view = FeatureView.from_yaml(YAML_VIEW)
    history = replay(view, list(read_event_log(s.kafka_client_config(), Topics(s.topic_prefix).events)))
    keys = [(p["source_partition"], p["source_offset"]) for p in preds]
    j = history.feature_names.index(BOOLEAN)
    worker_values = [p["features"][BOOLEAN] for p in preds]
    replay_values = history.features_for(keys)[:, j].tolist()
    boolean_spec = [f for f in meta.features if f.name == BOOLEAN]
    encoded = encode_features(boolean_spec, {BOOLEAN: worker_values}, len(preds))[:, 0].tolist()
    assert encoded == encode_features(boolean_spec, {BOOLEAN: replay_values}, len(preds))[:, 0].tolist()
    by_id = {f"serve.jsonl:{i + 1}": e for i, e in enumerate(events)}
    sent = [by_id[p["event_id"]][BOOLEAN] for p in preds]
    assert encoded == [1.0 if v else 0.0 for v in sent]  # true -> 1, false -> 0, as trained

    client = TestClient(build_api(s, model=MODEL))
    for value in (True, False):
        body = {"entity_id": preds[0]["entity_id"], "features": {**{n: 1.0 for n in NUMERIC}, BOOLEAN: value}}
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        served = answer.json()["features"][BOOLEAN]
        assert encode_features(boolean_spec, {BOOLEAN: [served]}, 1)[0, 0] == (1.0 if value else 0.0)
    wrong = client.post("/predict", json={"entity_id": "x", "features": {BOOLEAN: 1}})
    assert wrong.status_code == 422 and "expects true or false" in wrong.text


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["default", "missing"])
def test_missing_rate_alerts_when_a_numeric_input_starts_arriving_as_strings(
    own_settings: Settings, tmp_path: Path, env: dict[str, str], policy: str
) -> None:
    """By default the strings are dead-lettered (and the detector still sees them as missing);
    with the "missing" policy they are scored as missing."""
    s = own_settings.model_copy(update={"drift_window_seconds": 300.0})
    _train(env, tmp_path, 2000, *(() if policy == "default" else ("--on-wrong-type", policy)))
    events = own_events(4000, seed=7)
    for i, e in enumerate(events):
        if i >= 2000 and i % 10 < 3:  # from the middle on, 30% of mean_radius as strings
            e["mean_radius"] = f"{e['mean_radius']}"
    _produce(s, write_jsonl(tmp_path / "stream.jsonl", events))
    running = start_worker(s, model=MODEL)
    try:
        wait_until(
            lambda: any(a.feature == "mean_radius" and a.detector == "missing_rate" for a in _alerts(s)),
            timeout=240,
            every=1.0,
        )
        wait_until(lambda: _problems(running).get(("mean_radius", "wrong_type")) == 600, timeout=120)
    finally:
        running.stop()
    alert = next(a for a in _alerts(s) if a.feature == "mean_radius" and a.detector == "missing_rate")
    assert alert.window_start_ts is not None and alert.window_start_ts >= 1.7e9 + 2000 * 0.5 - 300
    assert _problems(running)[("mean_radius", "wrong_type")] == 600
    letters = dlq(s, 600 if policy == "default" else 0, timeout=30 if policy == "default" else 3)
    if policy == "default":
        assert len(letters) == 600 and {d.json()["reason_code"] for d in letters} == {"feature_type"}
    else:
        assert not letters
