"""Model registry in Redis: ONNX artifacts, version metadata, deployments and lifecycle events.

Redis is the only backend, so a worker on any host needs just the Redis address. Keys, under
``<r> = {<ns>:registry}`` (one hash tag: the registry's transactions span models, versions and
artifacts, and a Redis Cluster runs a transaction on one slot; `registry_prefix`; the whole
layout: `driftline.redis_keys`):

==========================================  ======================================================
``<r>:models``                              set of model names
``<r>:model:<name>:next_version``           counter; INCR allocates version numbers atomically
``<r>:model:<name>:versions``               sorted set of version numbers (score = version)
``<r>:model:<name>:v:<version>:meta``       `ModelVersion` JSON (stage included)
``<r>:artifact:<sha256>``                   ONNX bytes, content-addressed: stored once per hash
``<r>:model:<name>:deployment``             hash: production, canary, canary_fraction, shadow,
                                            previous_production (version numbers, "" = none),
                                            generation (bumped by every lifecycle change)
``<r>:model:<name>:events``                 list of `ModelEvent` JSON, oldest first (the newest
                                            ``max_events`` kept)
``<r>:model:<name>:event_seq``              counter numbering the events in the durable copy
==========================================  ======================================================

With a `durable` archive (the durable copy, `inference.registry_log`), a registration is written there
before Redis, and every lifecycle change right after its MULTI/EXEC; a version number is never
reused, even after Redis lost the counter: the next is ``max(counter, highest durable) + 1``.
`restore` rebuilds the Redis copy from the archive. Retention: the artifacts of archived
versions beyond the newest ``keep_archived`` (never production, canary, shadow or the previous
production) are deleted from Redis and the archive; their metadata and events stay.

Every lifecycle change (promote, rollback, canary, shadow, archive) reads the deployment under
WATCH and writes the affected versions' metadata, the deployment hash and the event in one
MULTI/EXEC, retrying if another process changed the deployment meanwhile; then it calls
``on_event``. Artifacts are checked by sha256 on every `load`; with a `signer`
(`inference.signing`), registered metadata is signed and `load` refuses metadata whose
signature does not verify. The client must return bytes
(``decode_responses=False``, the default).

>>> parse_ref("fraud:3"), parse_ref("fraud")
(('fraud', 3), ('fraud', None))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster

from inference.metadata import (
    Deployment,
    Distribution,
    EventKind,
    FeatureSpec,
    ModelEvent,
    ModelVersion,
    Stage,
    TrainingInfo,
    VersionInputs,
    check_model_name,
)
from inference.registry_log import (
    Record,
    RegistryArchive,
    RegistrySnapshot,
    artifact_records,
    artifact_tombstones,
    chunk_count,
    deployment_record,
    event_record,
    prunable,
    split_large,
    version_record,
)
from inference.session import ModelIntegrityError, ModelSession, sha256_hex
from inference.signing import MetadataSigner

_SLOTS = ("production", "canary", "shadow", "previous_production")
_MAX_ATTEMPTS = 50

# INCR that first raises the counter to a floor (the durable copy's highest number): atomic, so
# concurrent registrations after a FLUSHALL still get distinct, never-used numbers.
_ALLOCATE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCR', KEYS[1])
"""
# SET to the floor if the counter is below it (restore: never move a counter back).
_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


def registry_prefix(namespace: str) -> str:
    """The hash tag every registry key starts with (braces included).

    >>> registry_prefix("dl")
    '{dl:registry}'
    """
    return f"{{{namespace}:registry}}"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name:version"`` -> (name, version); ``"name"`` -> (name, None). ValueError otherwise."""
    name, sep, version = ref.strip().partition(":")
    try:
        check_model_name(name)
        if not sep:
            return name, None
        if not version.isdigit() or int(version) < 1:
            raise ValueError
        return name, int(version)
    except ValueError:
        raise ValueError(
            f"invalid model reference {ref!r}: expected NAME or NAME:VERSION, e.g. fraud or fraud:3"
        ) from None


def _connection_kwargs(client: redis.Redis | RedisCluster) -> dict[str, Any]:
    if isinstance(client, redis.Redis):
        return dict(client.get_connection_kwargs())
    return dict(client.nodes_manager.connection_kwargs)


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class RestoredModel:
    """What `ModelRegistry.restore` brought back for one model."""

    name: str
    versions: int
    artifacts: int  # versions whose artifact was restored (verified by sha256)
    events: int
    production: int | None
    missing_artifacts: list[str]  # refs whose artifact the durable copy lacks (beyond retention: fine)


class _Change:
    """One lifecycle change being planned inside a WATCH: reads go straight to Redis, writes are kept."""

    def __init__(self, registry: ModelRegistry, pipe: Pipeline, name: str) -> None:
        self.registry = registry
        self.pipe = pipe
        self.name = name
        raw = pipe.hgetall(registry._deployment_key(name))
        self.dep: dict[str, str] = {_text(k): _text(v) for k, v in raw.items()}
        self.changed: dict[int, ModelVersion] = {}

    def slot(self, field: str) -> int | None:
        value = self.dep.get(field, "")
        return int(value) if value else None

    def set_slot(self, field: str, version: int | None) -> None:
        self.dep[field] = "" if version is None else str(version)
        if field == "canary" and version is None:
            self.dep["canary_fraction"] = ""

    def fraction(self) -> float | None:
        value = self.dep.get("canary_fraction", "")
        return float(value) if value else None

    def meta(self, version: int) -> ModelVersion:
        if version in self.changed:
            return self.changed[version]
        raw = self.pipe.get(self.registry._meta_key(self.name, version))
        if raw is None:
            raise self.registry._missing_version(self.name, version)
        return ModelVersion.model_validate_json(raw)

    def servable(self, version: int) -> ModelVersion:
        """The metadata of `version`, checked to still have its artifact (retention may drop it)."""
        mv = self.meta(version)
        if not self.pipe.exists(self.registry.artifact_key(mv.sha256)):
            raise ValueError(
                f"{mv.ref} has no artifact any more (archived versions beyond "
                f"keep_archived={self.registry.keep_archived} lose theirs): it cannot serve"
            )
        return mv

    def set_stage(self, version: int, stage: Stage, fraction: float | None = None) -> None:
        self.changed[version] = self.meta(version).model_copy(
            update={"stage": stage, "canary_fraction": fraction}
        )

    def event(
        self,
        kind: EventKind,
        version: int,
        stage: Stage,
        fraction: float | None = None,
        **detail: Any,
    ) -> ModelEvent:
        return ModelEvent(
            kind=kind,
            name=self.name,
            version=version,
            stage=stage,
            fraction=fraction,
            ts=_now(),
            detail=detail,
        )


class ModelRegistry:
    """Registers ONNX models in Redis and moves versions through candidate/shadow/canary/production.

    `on_event` is called after each committed change (registration included), in order.
    """

    def __init__(
        self,
        redis_client: redis.Redis | RedisCluster,
        namespace: str,
        on_event: Callable[[ModelEvent], None] | None = None,
        durable: RegistryArchive | None = None,
        keep_archived: int = 5,
        max_events: int = 1000,
        signer: MetadataSigner | None = None,
    ) -> None:
        if not namespace or any(c.isspace() for c in namespace):
            raise ValueError(f"invalid registry namespace {namespace!r}: non-empty, no whitespace")
        if _connection_kwargs(redis_client).get("decode_responses"):
            raise ValueError("the model registry needs a Redis client with decode_responses=False")
        if keep_archived < 0 or max_events < 1:
            raise ValueError("keep_archived must be >= 0 and max_events >= 1")
        self._r = redis_client
        self.namespace = namespace
        self._keys = registry_prefix(namespace)
        self.on_event = on_event
        self.durable = durable
        self.keep_archived = keep_archived
        self.max_events = max_events
        self.signer = signer
        self._allocate = redis_client.register_script(_ALLOCATE)
        self._raise = redis_client.register_script(_RAISE)

    # -- keys -------------------------------------------------------------------------------------

    def _models_key(self) -> str:
        return f"{self._keys}:models"

    def _model_key(self, name: str, suffix: str) -> str:
        return f"{self._keys}:model:{name}:{suffix}"

    def _meta_key(self, name: str, version: int) -> str:
        return self._model_key(name, f"v:{version}:meta")

    def _deployment_key(self, name: str) -> str:
        return self._model_key(name, "deployment")

    def artifact_key(self, sha256: str) -> str:
        """Redis key of the artifact with this sha256."""
        return f"{self._keys}:artifact:{sha256}"

    # -- reads ------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Registered model names, sorted."""
        return sorted(_text(n) for n in self._r.smembers(self._models_key()))

    def _version_numbers(self, name: str) -> list[int]:
        raw = cast(list[bytes], self._r.zrange(self._model_key(name, "versions"), 0, -1))
        return [int(v) for v in raw]

    def _missing_version(self, name: str, version: int) -> LookupError:
        known = self._version_numbers(name)
        if not known:
            return LookupError(f"unknown model {name!r} (registered: {', '.join(self.names()) or 'none'})")
        listed = ", ".join(map(str, known))
        return LookupError(f"model {name!r} has no version {version} (versions: {listed})")

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of `name`, oldest first ([] for an unknown name)."""
        numbers = self._version_numbers(check_model_name(name))
        if not numbers:
            return []
        raws = self._r.mget([self._meta_key(name, v) for v in numbers])
        return [ModelVersion.model_validate_json(raw) for raw in raws if raw is not None]

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """Metadata of `name`:`version`, or of the production version when `version` is None."""
        check_model_name(name)
        if version is None:
            production = self.deployment(name).production
            if production is None:
                if not self._version_numbers(name):
                    raise self._missing_version(name, 0)
                raise LookupError(f"model {name!r} has no production version")
            return production
        raw = self._r.get(self._meta_key(name, version))
        if raw is None:
            raise self._missing_version(name, version)
        return ModelVersion.model_validate_json(raw)

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, ModelSession]:
        """Metadata and a verified session (sha256 checked) of `name`:`version` (None: production).

        With a `signer`, the metadata's signature is checked first (`ModelSignatureError`)."""
        meta = self.get(name, version)
        if self.signer is not None:
            self.signer.verify(meta)
        data = self._r.get(self.artifact_key(meta.sha256))
        if data is None:
            raise ModelIntegrityError(
                f"{meta.ref}: artifact {meta.sha256} is missing from Redis (archived beyond the "
                "retention, or Redis lost it: `driftline models restore` brings back what the "
                "durable copy holds)"
            )
        return meta, ModelSession.load(meta, data if isinstance(data, bytes) else data.encode())

    def deployment(self, name: str) -> Deployment:
        """A consistent snapshot of what serves `name` (all slots empty for an unknown name)."""
        check_model_name(name)
        key = self._deployment_key(name)
        for _ in range(20):
            dep = {_text(k): _text(v) for k, v in self._r.hgetall(key).items()}
            slots = {s: int(dep[s]) for s in ("production", "canary", "shadow") if dep.get(s)}
            raws = self._r.mget([self._meta_key(name, v) for v in slots.values()]) if slots else []
            # Metadata and hash change together under MULTI; re-read if a change landed in between.
            if _text(self._r.hget(key, "generation")) != dep.get("generation", ""):
                continue
            metas = {s: ModelVersion.model_validate_json(r) for s, r in zip(slots, raws, strict=True) if r}
            canary = metas.get("canary")
            fraction = float(dep["canary_fraction"]) if canary and dep.get("canary_fraction") else 0.0
            return Deployment(
                name=name,
                production=metas.get("production"),
                canary=canary,
                canary_fraction=fraction,
                shadow=metas.get("shadow"),
            )
        raise RuntimeError(f"deployment of {name!r} kept changing while being read")

    def generation(self, name: str) -> int:
        """Counter bumped by every lifecycle change of `name` (0 before any): a cheap "did it change?"."""
        value = _text(self._r.hget(self._deployment_key(check_model_name(name)), "generation"))
        return int(value) if value else 0

    def history(self, name: str) -> list[ModelEvent]:
        """Lifecycle events of `name`, oldest first."""
        raws = self._r.lrange(self._model_key(check_model_name(name), "events"), 0, -1)
        return [ModelEvent.model_validate_json(r) for r in raws]

    # -- writes -----------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        onnx_bytes: bytes,
        features: Sequence[FeatureSpec],
        training: TrainingInfo | None = None,
        reference: Mapping[str, Distribution] | None = None,
        score_reference: Distribution | None = None,
        stage: Stage = "candidate",
        threshold: float = 0.5,
        detail: Mapping[str, Any] | None = None,
        inputs: VersionInputs | None = None,
    ) -> ModelVersion:
        """Store a new version (checked to load as ONNX with the features' width) and return it.

        The version starts as a candidate; ``stage`` "production", "shadow" or "archived" then
        applies that change too (a canary needs a fraction: use `canary`).
        """
        check_model_name(name)
        if stage == "canary":
            raise ValueError(
                "register cannot start a canary: register it, then call canary(name, version, fraction)"
            )
        session = ModelSession.open(onnx_bytes, features, ref=f"{name}:new")
        sha = sha256_hex(onnx_bytes)
        draft = ModelVersion(
            name=name,
            version=1,
            sha256=sha,
            features=list(features),
            input_name=session.input_name,
            created_at=_now(),
            stage="candidate",
            training=training,
            reference=dict(reference or {}),
            score_reference=score_reference,
            threshold=threshold,
            inputs=inputs,
        )
        floor_version, floor_seq = self._durable_floors(name)
        version = int(self._allocate([self._model_key(name, "next_version")], [floor_version]))
        meta = draft.model_copy(update={"version": version})
        if self.signer is not None:
            meta = self.signer.sign(meta)
        event = ModelEvent(
            kind="registered",
            name=name,
            version=version,
            stage="candidate",
            ts=meta.created_at,
            detail={
                "sha256": sha,
                "artifact_bytes": len(onnx_bytes),
                "features": len(meta.features),
                "estimator": training.estimator if training else None,
                "metrics": dict(training.metrics) if training else {},
                **(detail or {}),
            },
        )
        if self.durable is not None:  # durable first: a version in Redis is always in the archive
            seq = self._next_seq(name, floor_seq)
            records = [*artifact_records(onnx_bytes), version_record(meta)]
            self._durable_write([*records, event_record(event, seq, self.max_events)])
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self.artifact_key(sha), onnx_bytes, nx=True)
        pipe.set(self._meta_key(name, version), meta.model_dump_json())
        pipe.zadd(self._model_key(name, "versions"), {str(version): version})
        pipe.sadd(self._models_key(), name)
        pipe.rpush(self._model_key(name, "events"), event.model_dump_json())
        pipe.ltrim(self._model_key(name, "events"), -self.max_events, -1)
        pipe.execute()
        self._emit(event)
        if stage == "production":
            self.promote(name, version)
        elif stage == "shadow":
            self.shadow(name, version)
        elif stage == "archived":
            self.archive(name, version)
        return self.get(name, version)

    def sign(self, name: str, version: int) -> ModelVersion:
        """Sign the stored metadata of `name`:`version` with the `signer` (versions registered
        before the registry had a key). Whoever runs this vouches for the version."""
        if self.signer is None:
            raise ValueError("signing needs the registry key (DRIFTLINE_REGISTRY_KEY)")
        meta = self.signer.sign(self.get(name, version))
        self._r.set(self._meta_key(name, version), meta.model_dump_json())
        if self.durable is not None:
            self._durable_write([version_record(meta)])
        return meta

    def promote(self, name: str, version: int, detail: Mapping[str, Any] | None = None) -> ModelEvent:
        """Make `version` production; the previous production is archived and kept for `rollback`."""

        def plan(c: _Change) -> ModelEvent:
            mv = c.servable(version)
            if mv.stage == "production":
                raise ValueError(f"{mv.ref} is already in production")
            old = c.slot("production")
            if old is not None:
                c.set_stage(old, "archived")
            if c.slot("canary") == version:
                c.set_slot("canary", None)
            if c.slot("shadow") == version:
                c.set_slot("shadow", None)
            c.set_slot("production", version)
            c.set_slot("previous_production", old)
            c.set_stage(version, "production")
            return c.event("promoted", version, "production", previous_production=old, from_stage=mv.stage)

        return self._change(name, plan, detail)

    def rollback(self, name: str, detail: Mapping[str, Any] | None = None) -> ModelEvent:
        """Drop the canary if there is one; otherwise restore the previous production version."""

        def plan(c: _Change) -> ModelEvent:
            production = c.slot("production")
            canary = c.slot("canary")
            if canary is not None:
                fraction = c.fraction()
                c.set_slot("canary", None)
                c.set_stage(canary, "archived")
                return c.event(
                    "rolled_back", canary, "archived", fraction, arm="canary", production=production
                )
            previous = c.slot("previous_production")
            if previous is None:
                raise ValueError(
                    f"nothing to roll back for model {name!r}: no canary and no previous production"
                )
            if production is not None:
                c.set_stage(production, "archived")
            if c.slot("shadow") == previous:
                c.set_slot("shadow", None)
            c.set_slot("production", previous)
            c.set_slot("previous_production", None)
            c.set_stage(previous, "production")
            if production is None:
                return c.event("rolled_back", previous, "production", arm="production", restored=previous)
            return c.event("rolled_back", production, "archived", arm="production", restored=previous)

        return self._change(name, plan, detail)

    def canary(
        self, name: str, version: int, fraction: float, detail: Mapping[str, Any] | None = None
    ) -> ModelEvent:
        """Send the share `fraction` (0 < fraction < 1) of entities to `version`, next to production.

        Calling it again for the current canary changes its fraction; a different canary is archived.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"canary fraction must be strictly between 0 and 1, got {fraction}")

        def plan(c: _Change) -> ModelEvent:
            mv = c.servable(version)
            if mv.stage == "production":
                raise ValueError(f"{mv.ref} is in production: it cannot also be the canary")
            production = c.slot("production")
            if production is None:
                raise ValueError(f"model {name!r} has no production version to run a canary against")
            old = c.slot("canary")
            previous_fraction = c.fraction() if old == version else None
            if old is not None and old != version:
                c.set_stage(old, "archived")
            if c.slot("shadow") == version:
                c.set_slot("shadow", None)
            c.set_slot("canary", version)
            c.dep["canary_fraction"] = repr(float(fraction))
            c.set_stage(version, "canary", fraction)
            return c.event(
                "canary_started",
                version,
                "canary",
                fraction,
                production=production,
                replaced=old if old != version else None,
                previous_fraction=previous_fraction,
                from_stage=mv.stage,
            )

        return self._change(name, plan, detail)

    def shadow(self, name: str, version: int, detail: Mapping[str, Any] | None = None) -> ModelEvent:
        """Score every event with `version` too, without serving it; a previous shadow is archived."""

        def plan(c: _Change) -> ModelEvent:
            mv = c.servable(version)
            if mv.stage in ("production", "shadow"):
                raise ValueError(f"{mv.ref} is already {mv.stage}")
            if c.slot("canary") == version:
                c.set_slot("canary", None)
            old = c.slot("shadow")
            if old is not None:
                c.set_stage(old, "archived")
            c.set_slot("shadow", version)
            c.set_stage(version, "shadow")
            return c.event(
                "shadow_started",
                version,
                "shadow",
                production=c.slot("production"),
                replaced=old,
                from_stage=mv.stage,
            )

        return self._change(name, plan, detail)

    def archive(self, name: str, version: int, detail: Mapping[str, Any] | None = None) -> ModelEvent:
        """Retire `version` (leaving the canary or shadow slot if it held one). Not production."""

        def plan(c: _Change) -> ModelEvent:
            mv = c.meta(version)
            if mv.stage == "production":
                raise ValueError(f"{mv.ref} is in production: promote another version or roll back first")
            if mv.stage == "archived":
                raise ValueError(f"{mv.ref} is already archived")
            if c.slot("canary") == version:
                c.set_slot("canary", None)
            if c.slot("shadow") == version:
                c.set_slot("shadow", None)
            c.set_stage(version, "archived")
            return c.event("archived", version, "archived", from_stage=mv.stage)

        return self._change(name, plan, detail)

    # -- durable copy -----------------------------------------------------------------------------

    def restore(self, snap: RegistrySnapshot) -> list[RestoredModel]:
        """Rebuild the Redis copy of every model in `snap` (the durable copy): versions with their
        stages, artifacts (verified by sha256 when the snapshot was folded), the deployment, the
        lifecycle events and the counters (never moved back). Versions only Redis knows are kept."""
        out = []
        for name in snap.names():
            versions = snap.versions.get(name, {})
            dep = dict(snap.deployments.get(name, {}))
            current = _text(self._r.hget(self._deployment_key(name), "generation"))
            generation = max(int(current or 0), int(dep.get("generation") or 0)) + 1
            protected = {int(dep[s]) for s in _SLOTS if dep.get(s)}
            pruned = {v.version for v in prunable(list(versions.values()), protected, self.keep_archived)}
            missing = [
                m.ref
                for v, m in sorted(versions.items())
                if m.sha256 not in snap.artifacts and v not in pruned
            ]
            events = [e for _, e in snap.events.get(name, [])][-self.max_events :]
            pipe = self._r.pipeline(transaction=True)
            for sha in sorted({m.sha256 for m in versions.values()} & set(snap.artifacts)):
                pipe.set(self.artifact_key(sha), snap.artifacts[sha])
            for v, meta in versions.items():
                pipe.set(self._meta_key(name, v), meta.model_dump_json())
                pipe.zadd(self._model_key(name, "versions"), {str(v): v})
            pipe.sadd(self._models_key(), name)
            if dep:
                slots: dict[Any, str] = {f: dep.get(f, "") for f in (*_SLOTS, "canary_fraction")}
                pipe.hset(self._deployment_key(name), mapping={**slots, "generation": str(generation)})
            if events:
                pipe.delete(self._model_key(name, "events"))
                pipe.rpush(self._model_key(name, "events"), *(e.model_dump_json() for e in events))
            self._raise([self._model_key(name, "next_version")], [snap.highest_version(name)], client=pipe)
            self._raise([self._model_key(name, "event_seq")], [snap.highest_event_seq(name)], client=pipe)
            pipe.execute()
            production = int(dep["production"]) if dep.get("production") else None
            restored = sum(1 for m in versions.values() if m.sha256 in snap.artifacts)
            out.append(RestoredModel(name, len(versions), restored, len(events), production, missing))
        return out

    def backfill(self, snap: RegistrySnapshot) -> list[str]:
        """Copy to the durable copy what only Redis holds (versions registered before it existed):
        their metadata and artifacts, and a model's deployment and events when it has none there.
        Returns the refs copied. Needs `durable`."""
        if self.durable is None:
            raise ValueError("backfill needs the registry's durable copy")
        copied: list[str] = []
        for name in self.names():
            known = snap.versions.get(name, {})
            records: list[Record] = []
            for meta in self.versions(name):
                if meta.version in known:
                    continue
                data = self._r.get(self.artifact_key(meta.sha256))
                if data is not None and meta.sha256 not in snap.artifacts:
                    records += artifact_records(data if isinstance(data, bytes) else data.encode())
                records.append(version_record(meta))
                copied.append(meta.ref)
            if not records:
                continue
            dep = {_text(k): _text(v) for k, v in self._r.hgetall(self._deployment_key(name)).items()}
            if dep and name not in snap.deployments:
                records.append(deployment_record(name, dep))
            if name not in snap.events:
                records += [
                    event_record(e, self._next_seq(name, 0), self.max_events) for e in self.history(name)
                ]
            self._durable_write(records)
        return copied

    # -- internals --------------------------------------------------------------------------------

    def _change(
        self, name: str, plan: Callable[[_Change], ModelEvent], detail: Mapping[str, Any] | None
    ) -> ModelEvent:
        check_model_name(name)
        key = self._deployment_key(name)

        with self._r.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_ATTEMPTS):
                try:
                    pipe.watch(key)
                    change = _Change(self, pipe, name)
                    event = plan(change)
                    if detail:
                        event = event.model_copy(update={"detail": {**event.detail, **detail}})
                    dep: dict[Any, str] = {slot: change.dep.get(slot, "") for slot in _SLOTS}
                    dep["canary_fraction"] = change.dep.get("canary_fraction", "") if dep["canary"] else ""
                    pipe.multi()
                    for v, meta in change.changed.items():
                        pipe.set(self._meta_key(name, v), meta.model_dump_json())
                    pipe.hset(key, mapping=dep)
                    pipe.hincrby(key, "generation", 1)
                    pipe.rpush(self._model_key(name, "events"), event.model_dump_json())
                    pipe.ltrim(self._model_key(name, "events"), -self.max_events, -1)
                    generation = pipe.execute()[len(change.changed) + 1]
                    break
                except redis.WatchError:
                    continue  # another process changed this deployment: plan again on the new state
                finally:
                    pipe.reset()
            else:
                raise RuntimeError(f"gave up changing {name!r}: its deployment kept changing concurrently")
        if self.durable is not None:
            _, floor_seq = self._durable_floors(name)
            records = [version_record(meta) for meta in change.changed.values()]
            records.append(deployment_record(name, {**dep, "generation": str(generation)}))
            self._durable_write(
                [*records, event_record(event, self._next_seq(name, floor_seq), self.max_events)]
            )
        self._emit(event)
        self.prune(name)
        return event

    def _durable_write(self, records: Sequence[Record]) -> None:
        assert self.durable is not None
        self.durable.write(split_large(records))

    def _durable_floors(self, name: str) -> tuple[int, int]:
        """The highest version and event number the durable copy holds for `name` (0, 0 without)."""
        if self.durable is None:
            return 0, 0
        snap = RegistrySnapshot.fold(self.durable.read())
        return snap.highest_version(name), snap.highest_event_seq(name)

    def _next_seq(self, name: str, floor: int) -> int:
        return int(self._allocate([self._model_key(name, "event_seq")], [floor]))

    def prune(self, name: str) -> list[int]:
        """Apply the retention to `name`: delete the artifacts of archived versions beyond the newest
        ``keep_archived`` (from Redis and the durable copy). Returns the versions pruned now."""
        dep = {_text(k): _text(v) for k, v in self._r.hgetall(self._deployment_key(name)).items()}
        protected = {int(dep[s]) for s in _SLOTS if dep.get(s)}
        versions = self.versions(name)
        dropped = prunable(versions, protected, self.keep_archived)
        kept = {v.sha256 for v in versions} - {v.sha256 for v in dropped}
        doomed = sorted({v.sha256 for v in dropped} - kept)
        present = [sha for sha, there in zip(doomed, self._exists(doomed), strict=True) if there]
        if not present:
            return []
        if self.durable is not None:  # the durable copy first: a restore must not bring them back
            sizes = [int(self._r.strlen(self.artifact_key(sha))) for sha in present]
            self._durable_write(
                [
                    t
                    for sha, size in zip(present, sizes, strict=True)
                    for t in artifact_tombstones(sha, chunk_count(size))
                ]
            )
        self._r.delete(*(self.artifact_key(sha) for sha in present))
        return [v.version for v in dropped if v.sha256 in present]

    def _exists(self, shas: Sequence[str]) -> list[bool]:
        pipe = self._r.pipeline(transaction=False)
        for sha in shas:
            pipe.exists(self.artifact_key(sha))
        return [bool(n) for n in pipe.execute()]

    def _emit(self, event: ModelEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
