"""The registry's durable copy: every version, artifact, deployment and lifecycle event as keyed records.

Redis holds the serving copy of the registry and is often run as a cache, so `ModelRegistry`
also writes each change as records to a `RegistryArchive` (in Driftline: the compacted
``<prefix>.registry`` topic, see ``stream/registry_log.py``). This module only knows the records,
not the transport. Each record is a key and a value; a newer record with the same key replaces
an older one (log compaction keeps the newest), a ``None`` value deletes the key:

==================================  ===========================================================
``version/<name>/<version>``        `ModelVersion` JSON, rewritten on every stage change
``deployment/<name>``               the deployment hash (slots, canary fraction, generation)
``event/<name>/<seq % max_events>`` ``{"seq": n, "event": ModelEvent}``: a ring of the newest events
``artifact/<sha256>/<i>``           chunk ``i`` of the ONNX bytes (at most `CHUNK_BYTES` each)
``artifact/<sha256>/manifest``      ``{"chunks": n, "size": bytes}``, written after the chunks
==================================  ===========================================================

Chunks keep every record below a broker's default 1 MB message limit: artifacts as above, and
any other value over `CHUNK_BYTES` (a version's metadata carries reference samples of every
feature and can exceed 1 MB) is written by `split_large` as parts ``<key>#<i>`` followed by
``<key>`` holding a parts manifest. `RegistrySnapshot.fold` rebuilds the state from records read
in log order; artifacts and split values are verified by sha256 there.

>>> recs = artifact_records(b"x" * 5, chunk_bytes=2)
>>> [k for k, _ in recs][-1], len(recs)
('artifact/eaf16bc07968e013f3f94ab1342472434a39fc3475f11cf341a6c3965974f8e9/manifest', 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from pydantic import ValidationError

from inference.metadata import ModelEvent, ModelVersion
from inference.session import sha256_hex

CHUNK_BYTES = 512 * 1024
_PARTS = b"\x00parts:"  # starts a split value's manifest (a JSON value never starts with NUL)

Record = tuple[str, bytes | None]


class RegistryArchiveError(RuntimeError):
    """The durable copy could not be written or read (the Redis copy may already hold the change)."""


class RegistryArchive(Protocol):
    """Where the registry keeps its durable copy."""

    def write(self, records: Sequence[Record]) -> None:
        """Store `records` in order; durable when this returns, RegistryArchiveError otherwise."""
        ...

    def read(self) -> Iterable[Record]:
        """Every record, oldest first."""
        ...


def version_record(meta: ModelVersion) -> Record:
    return f"version/{meta.name}/{meta.version}", meta.model_dump_json().encode()


def deployment_record(name: str, deployment: Mapping[str, str]) -> Record:
    return f"deployment/{name}", orjson.dumps(dict(deployment))


def event_record(event: ModelEvent, seq: int, max_events: int) -> Record:
    payload = {"seq": seq, "event": event.model_dump(mode="json")}
    return f"event/{event.name}/{seq % max_events}", orjson.dumps(payload)


def artifact_records(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[Record]:
    sha = sha256_hex(data)
    chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    records: list[Record] = [(f"artifact/{sha}/{i}", chunk) for i, chunk in enumerate(chunks)]
    manifest = orjson.dumps({"chunks": len(chunks), "size": len(data)})
    return [*records, (f"artifact/{sha}/manifest", manifest)]


def split_large(records: Sequence[Record], chunk_bytes: int = CHUNK_BYTES) -> list[Record]:
    """`records` with every value over `chunk_bytes` cut into parts (the manifest last).

    >>> [k for k, _ in split_large([("a", b"x" * 5), ("b", b"y")], chunk_bytes=2)]
    ['a#0', 'a#1', 'a#2', 'a', 'b']
    """
    out: list[Record] = []
    for key, value in records:
        if value is None or len(value) <= chunk_bytes:
            out.append((key, value))
            continue
        parts = [value[i : i + chunk_bytes] for i in range(0, len(value), chunk_bytes)]
        out += [(f"{key}#{i}", part) for i, part in enumerate(parts)]
        out.append((key, _PARTS + orjson.dumps({"parts": len(parts), "sha256": sha256_hex(value)})))
    return out


def _joined(key: str, manifest: bytes, latest: Mapping[str, bytes | None]) -> bytes:
    """The value `split_large` cut into parts; ValueError if a part is missing or altered."""
    info = orjson.loads(manifest[len(_PARTS) :])
    parts = [latest.get(f"{key}#{i}") for i in range(int(info["parts"]))]
    data = b"".join(p for p in parts if p is not None)
    if any(p is None for p in parts) or sha256_hex(data) != info["sha256"]:
        raise ValueError("its parts are missing or do not match their sha256")
    return data


def artifact_tombstones(sha: str, chunks: int) -> list[Record]:
    """Deletes an artifact (manifest first, so a half-deleted artifact is never taken as whole)."""
    return [(f"artifact/{sha}/manifest", None), *((f"artifact/{sha}/{i}", None) for i in range(chunks))]


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, -(-size // chunk_bytes))


@dataclass
class RegistrySnapshot:
    """The registry as the durable copy holds it."""

    versions: dict[str, dict[int, ModelVersion]] = field(default_factory=dict)
    deployments: dict[str, dict[str, str]] = field(default_factory=dict)
    events: dict[str, list[tuple[int, ModelEvent]]] = field(default_factory=dict)  # (seq, event), by seq
    artifacts: dict[str, bytes] = field(default_factory=dict)  # verified by sha256
    problems: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(set(self.versions) | set(self.deployments) | set(self.events))

    def highest_version(self, name: str) -> int:
        return max(self.versions.get(name, {}), default=0)

    def highest_event_seq(self, name: str) -> int:
        return max((seq for seq, _ in self.events.get(name, [])), default=0)

    @classmethod
    def fold(cls, records: Iterable[Record]) -> RegistrySnapshot:
        """The state after applying `records` in order (newest value per key wins)."""
        latest: dict[str, bytes | None] = {}
        for key, value in records:
            latest[key] = value
        snap = cls()
        events: dict[str, dict[int, ModelEvent]] = {}
        manifests: dict[str, dict[str, int]] = {}
        for key, value in latest.items():
            if value is None or "#" in key:  # deleted, or a part of a split value
                continue
            kind, _, rest = key.partition("/")
            try:
                if value.startswith(_PARTS):
                    value = _joined(key, value, latest)
                if kind == "version":
                    meta = ModelVersion.model_validate_json(value)
                    snap.versions.setdefault(meta.name, {})[meta.version] = meta
                elif kind == "deployment":
                    snap.deployments[rest] = {str(k): str(v) for k, v in orjson.loads(value).items()}
                elif kind == "event":
                    payload = orjson.loads(value)
                    event = ModelEvent.model_validate(payload["event"])
                    events.setdefault(event.name, {})[int(payload["seq"])] = event
                elif kind == "artifact" and rest.endswith("/manifest"):
                    manifests[rest.split("/")[0]] = orjson.loads(value)
            except (ValidationError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                snap.problems.append(f"record {key!r} does not parse: {exc}")
        snap.events = {name: sorted(by_seq.items()) for name, by_seq in events.items()}
        for sha, manifest in manifests.items():
            parts = [latest.get(f"artifact/{sha}/{i}") for i in range(int(manifest["chunks"]))]
            if any(p is None for p in parts):
                snap.problems.append(f"artifact {sha}: chunks missing from the durable copy")
                continue
            data = b"".join(p for p in parts if p is not None)
            if sha256_hex(data) != sha or len(data) != int(manifest["size"]):
                snap.problems.append(f"artifact {sha}: its bytes do not match their sha256, not restored")
                continue
            snap.artifacts[sha] = data
        return snap


def next_number(counter: int, durable_highest: int) -> int:
    """The next version (or event sequence) number: above both what Redis and the durable copy saw.

    >>> next_number(3, 7), next_number(9, 7), next_number(0, 0)
    (8, 10, 1)
    """
    return max(counter, durable_highest) + 1


def prunable(
    versions: Sequence[ModelVersion], protected: Iterable[int], keep_archived: int
) -> list[ModelVersion]:
    """Archived versions whose artifacts retention drops: all but the newest `keep_archived`
    archived ones, never a `protected` version (production, canary, shadow, previous production).
    Several versions may share one artifact: the caller keeps an artifact any kept version uses.

    >>> from datetime import datetime
    >>> from inference.metadata import FeatureSpec
    >>> f = [FeatureSpec(name="x", kind="numeric")]
    >>> vs = [ModelVersion(name="m", version=v, sha256=f"{v:064x}", features=f, input_name="i",
    ...                    created_at=datetime(2026, 1, 1), stage=s)
    ...       for v, s in enumerate(["archived", "archived", "archived", "production"], start=1)]
    >>> [v.version for v in prunable(vs, protected={4, 1}, keep_archived=1)]
    [2]
    """
    keep = set(protected)
    archived = sorted((v for v in versions if v.stage == "archived"), key=lambda v: v.version)
    retained = (
        {v.version for v in archived[max(len(archived) - keep_archived, 0) :]} if keep_archived else set()
    )
    return [v for v in archived if v.version not in keep and v.version not in retained]
