"""The registry's durable records: folding them back, version numbering, retention."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from inference import registry_log as rl
from inference.metadata import Distribution, FeatureSpec, ModelEvent, ModelVersion, Stage
from inference.registry_log import Record, RegistrySnapshot
from inference.session import sha256_hex


def _version(v: int, stage: Stage, sha: str | None = None) -> ModelVersion:
    return ModelVersion(
        name="fraud",
        version=v,
        sha256=sha or f"{v:064x}",
        features=[FeatureSpec(name="x", kind="numeric")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage=stage,
    )


def _event(v: int, kind: str = "registered") -> ModelEvent:
    return ModelEvent.model_validate(
        {"kind": kind, "name": "fraud", "version": v, "stage": "candidate", "ts": datetime.now(UTC)}
    )


@pytest.mark.parametrize(("counter", "durable", "expected"), [(0, 0, 1), (3, 7, 8), (9, 7, 10), (5, 5, 6)])
def test_next_number_is_above_redis_and_the_durable_copy(counter: int, durable: int, expected: int) -> None:
    assert rl.next_number(counter, durable) == expected


def test_artifacts_are_chunked_below_the_message_limit_and_reassembled() -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: over the broker's default 1 MB message limit
    records = rl.artifact_records(data)
    assert len(records) == rl.chunk_count(len(data)) + 1 == 4
    assert all(len(v or b"") <= 512 * 1024 for _, v in records)
    snap = RegistrySnapshot.fold([rl.version_record(_version(1, "candidate", sha256_hex(data))), *records])
    assert snap.artifacts == {sha256_hex(data): data} and not snap.problems


def test_a_corrupt_or_incomplete_artifact_is_not_restored() -> None:
    data = b"onnx" * 1000
    sha = sha256_hex(data)
    chunks = rl.artifact_records(data, chunk_bytes=1000)
    corrupt = [(k, b"x" * len(v or b"") if k.endswith("/1") else v) for k, v in chunks]
    snap = RegistrySnapshot.fold(corrupt)
    assert sha not in snap.artifacts and "do not match their sha256" in snap.problems[0]
    incomplete = [r for r in chunks if not r[0].endswith("/2")]
    assert "chunks missing" in RegistrySnapshot.fold(incomplete).problems[0]


def test_fold_keeps_the_newest_value_per_key_and_honours_tombstones() -> None:
    data = b"model"
    records: list[Record] = [
        *rl.artifact_records(data),
        rl.version_record(_version(1, "candidate", sha256_hex(data))),
        rl.version_record(_version(2, "candidate")),
        rl.version_record(_version(1, "production", sha256_hex(data))),  # a later stage change
        rl.deployment_record("fraud", {"production": "1", "generation": "1"}),
        rl.deployment_record("fraud", {"production": "1", "canary": "2", "generation": "2"}),
        *rl.artifact_tombstones(sha256_hex(data), rl.chunk_count(len(data))),
        ("something/else", b"\xff not json"),
    ]
    snap = RegistrySnapshot.fold(records)
    assert {v: m.stage for v, m in snap.versions["fraud"].items()} == {1: "production", 2: "candidate"}
    assert snap.deployments["fraud"]["canary"] == "2" and snap.highest_version("fraud") == 2
    assert snap.artifacts == {} and snap.names() == ["fraud"] and not snap.problems
    assert snap.highest_version("churn") == 0


def test_events_are_a_ring_of_the_newest_in_sequence_order() -> None:
    records = [rl.event_record(_event(seq), seq, max_events=3) for seq in range(1, 8)]
    assert len({k for k, _ in records}) == 3  # compaction keeps three keys
    snap = RegistrySnapshot.fold(records)
    assert [seq for seq, _ in snap.events["fraud"]] == [5, 6, 7]
    assert [e.version for _, e in snap.events["fraud"]] == [5, 6, 7]
    assert snap.highest_event_seq("fraud") == 7
    assert orjson.loads(records[0][1] or b"")["seq"] == 1


def test_a_record_that_does_not_parse_is_reported_not_fatal() -> None:
    snap = RegistrySnapshot.fold([("version/fraud/1", b"{}"), rl.version_record(_version(2, "candidate"))])
    assert list(snap.versions["fraud"]) == [2] and "version/fraud/1" in snap.problems[0]


def test_retention_keeps_the_newest_archived_and_every_protected_version() -> None:
    archived: list[Stage] = ["archived"] * 6
    stages: list[Stage] = [*archived, "production", "candidate", "canary"]
    versions = [_version(v, s) for v, s in enumerate(stages, start=1)]
    # production 7, canary 9, previous production 2 are protected; keep the newest 2 archived.
    dropped = [v.version for v in rl.prunable(versions, protected={7, 9, 2}, keep_archived=2)]
    assert dropped == [1, 3, 4]
    assert [v.version for v in rl.prunable(versions, {7, 9}, keep_archived=0)] == [1, 2, 3, 4, 5, 6]
    assert rl.prunable(versions, {7, 9}, keep_archived=10) == []


def test_a_version_record_over_the_message_limit_is_split_and_joined() -> None:
    big = _version(1, "candidate").model_copy(
        update={"reference": {f"f{i}": _sample(i) for i in range(30)}}  # ~1.4 MB of JSON
    )
    record = rl.version_record(big)
    assert len(record[1] or b"") > 1024 * 1024
    split = rl.split_large([record])
    assert len(split) > 2 and all(len(v or b"") <= 512 * 1024 for _, v in split)
    assert RegistrySnapshot.fold(split).versions["fraud"][1] == big
    # A part lost or altered: reported, not restored as something else.
    damaged = [(k, b"{}" if k.endswith("#1") else v) for k, v in split]
    snap = RegistrySnapshot.fold(damaged)
    assert "fraud" not in snap.versions and "do not match their sha256" in snap.problems[0]


def _sample(seed: int) -> Distribution:
    values = [(seed * 7919 + i) / 3.0 for i in range(5000)]
    return Distribution(kind="numeric", sample=values, count=5000)
