"""`driftline train` and `driftline models ...` as a user runs them (real Redis and broker)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from driftline.settings import Settings
from stream.topics import Topics
from tests.helpers import consume_all, run_cli
from tests.integration.worker_support import registry, trained

pytestmark = pytest.mark.integration


def test_train_and_roll_out_from_the_cli(own_settings: Settings, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}
    first = run_cli("train", "--synthetic", "--n", "3000", env=env)
    assert first.returncode == 0, first.stderr
    assert "registered fraud:1 as production" in first.stdout and "auc" in first.stdout
    second = run_cli("train", "--synthetic", "--n", "3000", "--seed", "1", "--stage", "candidate", env=env)
    assert "registered fraud:2 as candidate" in second.stdout, second.stderr

    listed = run_cli("models", "list", env=env)
    assert listed.returncode == 0 and "production" in listed.stdout and "candidate" in listed.stdout

    shown = run_cli("models", "show", "fraud", env=env)
    assert shown.returncode == 0 and '"version": 1' in shown.stdout and "amount" in shown.stdout

    assert run_cli("models", "shadow", "fraud:2", env=env).returncode == 0
    assert registry(own_settings).deployment("fraud").shadow is not None
    canary = run_cli("models", "canary", "fraud:2", "--fraction", "0.25", env=env)
    assert canary.returncode == 0, canary.stderr
    d = registry(own_settings).deployment("fraud")
    assert d.canary is not None and d.canary.version == 2 and d.canary_fraction == 0.25
    rolled = run_cli("models", "rollback", "fraud", env=env)
    assert rolled.returncode == 0 and "production is fraud:1" in rolled.stdout
    assert registry(own_settings).deployment("fraud").canary is None
    assert run_cli("models", "promote", "fraud:2", env=env).returncode == 0
    assert registry(own_settings).deployment("fraud").production.version == 2  # type: ignore[union-attr]

    # Every lifecycle change is an event on <prefix>.models.
    events = [r.json() for r in consume_all(own_settings, Topics(own_settings.topic_prefix).models, 6, 30)]
    kinds = [e["kind"] for e in events]
    assert kinds.count("registered") == 2
    assert {"shadow_started", "canary_started", "rolled_back", "promoted"} <= set(kinds)
    assert all(e["name"] == "fraud" for e in events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "promote", "fraud"], "give a version"),
        (["models", "promote", "fraud:x"], "NAME:VERSION"),
        (["models", "canary", "fraud:1", "--fraction", "1"], "between 0 and 1"),
        (["models", "show", "nosuchmodel"], "nosuchmodel"),
        (["train"], "exactly one of --synthetic or --file"),
        (["train", "--synthetic", "--estimator", "forest"], "unknown estimator"),
    ],
)
def test_bad_model_commands_are_one_line(cli_env: dict[str, str], args: list[str], message: str) -> None:
    result = run_cli(*args, env=cli_env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftline: error: ") and message in lines[0], (
        result.stderr
    )


def test_register_external_onnx_with_reference_data(
    own_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    t = trained()
    model = tmp_path / "model.onnx"
    model.write_bytes(t.onnx_bytes)
    spec = ",".join(
        f.name if f.kind == "numeric" else f"{f.name}={'|'.join(f.categories)}" for f in t.features
    )
    reference = tmp_path / "reference.jsonl"
    rows = [
        {"entity_id": "r", "ts": "2026-01-01T00:00:00Z", **{f.name: (1.0 if f.kind == "numeric" else "US")}}
        for f in t.features
    ]
    flat: dict[str, object] = {}
    for row in rows:
        flat.update(row)
    reference.write_bytes(b"\n".join(orjson.dumps({**flat, "amount": float(i)}) for i in range(200)))
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}
    result = run_cli(
        "models", "register", str(model), "--name", "ext", "--features", spec,
        "--reference", str(reference), "--stage", "production", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    meta = registry(own_settings).get("ext")
    assert meta.stage == "production" and meta.sha256 == t.sha256
    assert meta.reference["amount"].count == 200 and meta.score_reference is not None
    assert next(f for f in meta.features if f.name == "amount").fill_value == pytest.approx(99.5)

    bad = run_cli("models", "register", str(model), "--name", "ext", "--features", "amount", env=env)
    assert bad.returncode == 1 and "driftline: error:" in bad.stderr and "width" in bad.stderr


def test_train_on_a_users_labeled_file_with_gbt(
    own_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    from stream.synthetic import FraudGenerator

    batch = FraudGenerator(seed=5, start_ts=1.7e9).batch(0, 3000)
    path = tmp_path / "labeled.jsonl"
    lines = []
    for event, label in zip(batch.event_dicts(), batch.labels.tolist(), strict=True):
        lines.append(orjson.dumps({**event, "features": {**event["features"], "is_fraud": label}}))
    path.write_bytes(b"\n".join(lines))
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix}
    result = run_cli(
        "train", "--file", str(path), "--label", "is_fraud", "--estimator", "gbt", "--name", "mine", env=env
    )
    assert result.returncode == 0, result.stderr
    meta = registry(own_settings).get("mine")
    assert meta.training is not None and meta.training.estimator == "gbt"
    assert meta.training.rows + meta.training.holdout_rows == 3000
    assert meta.training.metrics["auc"] > 0.85
    assert "is_fraud" not in {f.name for f in meta.features}  # the label is not an input
    kinds = {f.name: f.kind for f in meta.features}
    assert kinds["merchant_category"] == "categorical" and kinds["amount"] == "numeric"

    path.write_bytes(path.read_bytes() + b'\n{"entity_id":"x","ts":"2026-01-01T00:00:00Z","amount":1}\n')
    missing = run_cli("train", "--file", str(path), "--label", "is_fraud", env=env)
    assert missing.returncode == 1
    assert "labeled.jsonl:3001: label field 'is_fraud' is missing" in missing.stderr
