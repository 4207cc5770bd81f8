"""Driftline's Redis key layout, in one place: every component builds its keys here.

The same layout serves a single Redis server and a Redis Cluster (``redis+cluster://``,
`driftline.redis_cluster`). A cluster puts each key in one of 16,384 hash slots, and a
transaction (``MULTI``/``EXEC``), a ``WATCH`` or a Lua script may only touch keys of one slot. A
key's slot is the CRC16 of its **hash tag** - the text between its first ``{`` and the next
``}`` - when it has one. So every group of keys written together shares a tag, and the tags are
chosen so the load spreads over the nodes:

=========================================================  =======================================
tag (one slot each)                                        keys written together
=========================================================  =======================================
``{<ns>:fs:<view>:p<partition>}``                          the feature store's entities of one
                                                           source partition, its watermark and
                                                           replay results (one ``WATCH``/``MULTI``
                                                           per partition): spreads with the
                                                           partitions
``{<ns>:drift:<model>:<version>}``                         one model version's drift windows
                                                           (Lua scripts), ADWIN states, the shared
                                                           alert policy and incident book, its
                                                           alert history and incident hash (one
                                                           ``WATCH``/``MULTI``): spreads with the
                                                           versions
``{<ns>:outcomes:<model>:<version>}``                      the outcome joiner's error-rate and
                                                           CUSUM states of one version
``{<ns>:registry}``                                        the model registry (small, rarely
                                                           written: its transactions span models,
                                                           versions and artifacts)
(none)                                                     keys only ever used alone: the outcome
                                                           join state ``<ns>:join:*``, the feature
                                                           store's ``where``, ``definition`` and
                                                           ``since`` keys, ``<ns>:drift:<model>:~versions``
                                                           (the versions with drift state)
=========================================================  =======================================

With a single Redis the tags change nothing (one server holds every slot), so the layout and
the code paths are the same for both. The owning modules' docstrings list each key's type and
meaning: `feature_store.online`, `detectors.window_store`, `detectors.policy_store`,
`stream.drift`, `stream.outcomes`, `inference.registry`.

**Finding an entity** (``driftline features get``, the API's ``/features/{id}``): an entity's
hash is under its source partition's tag, so a reader first reads the entity's partition from
``<ns>:fs:<view>:where:<entity_id>`` (written, before its first state, by the writer that
created it; same TTL), then the hash. This does not depend on how producers pick partitions
(librdkafka's default partitioner is CRC32-based, Java's murmur2). An entity's events must come
from one partition (Kafka keyed by entity) - required for exact counts anyway; on a cluster a
batch mixing one entity's partitions is refused.

``redis-cli -c`` follows the cluster's redirects; quote the braces for the shell::

    redis-cli -c -p 7000 GET dl:fs:fraud:where:card-000317                  # -> 3
    redis-cli -c -p 7000 HGET '{dl:fs:fraud:p3}:entity:card-000317' features
    redis-cli -c -p 7000 LRANGE '{dl:drift:fraud:2}:~alerts' 0 9

>>> fs_entity("dl", "fraud", 3, "card-1")
'{dl:fs:fraud:p3}:entity:card-1'
>>> slot_tag(drift_prefix("dl", "fraud", 2) + ":~policy")
'dl:drift:fraud:2'
>>> key_slot("{dl:fs:fraud:p3}:entity:a") == key_slot("{dl:fs:fraud:p3}:offset:dl.events")
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
"""A client of a single Redis server or of a Redis Cluster (`driftline.settings.Settings.redis_client`)."""

# ---- feature store (feature_store.online) ---------------------------------------------------


def fs_tag(ns: str, view: str, partition: int) -> str:
    """The hash tag of one source partition's feature-store keys (braces included)."""
    return f"{{{ns}:fs:{view}:p{partition}}}"


def fs_entity(ns: str, view: str, partition: int, entity_id: str) -> str:
    return f"{fs_tag(ns, view, partition)}:entity:{entity_id}"


def fs_offset(ns: str, view: str, source: str, partition: int) -> str:
    return f"{fs_tag(ns, view, partition)}:offset:{source}"


def fs_replay(ns: str, view: str, source: str, partition: int) -> str:
    return f"{fs_tag(ns, view, partition)}:replay:{source}"


def fs_where(ns: str, view: str, entity_id: str) -> str:
    """String: the source partition whose tag holds the entity's hash."""
    return f"{ns}:fs:{view}:where:{entity_id}"


def fs_definition(ns: str, view: str) -> str:
    return f"{ns}:fs:{view}:definition"


def fs_since(ns: str, view: str) -> str:
    return f"{ns}:fs:{view}:since"


# ---- drift (detectors.window_store, detectors.policy_store, stream.drift) --------------------


def drift_prefix(ns: str, model: str, version: int) -> str:
    """Every key of one model version's drift state starts with this (its hash tag)."""
    return f"{{{ns}:drift:{model}:{version}}}"


def drift_policy(ns: str, model: str, version: int) -> str:
    """String: the shared alert policy and incident book (JSON)."""
    return f"{drift_prefix(ns, model, version)}:~policy"


def drift_alerts(ns: str, model: str, version: int) -> str:
    """List: the version's recent alerts, newest first (capped at 1,000)."""
    return f"{drift_prefix(ns, model, version)}:~alerts"


def drift_incidents(ns: str, model: str, version: int) -> str:
    """Hash: incident id -> the incident's latest `DriftIncident` JSON."""
    return f"{drift_prefix(ns, model, version)}:~incidents"


def drift_latest(ns: str, model: str, version: int) -> str:
    return f"{drift_prefix(ns, model, version)}:~latest"


def drift_history(ns: str, model: str, version: int) -> str:
    return f"{drift_prefix(ns, model, version)}:~history"


def drift_bins(ns: str, model: str, version: int) -> str:
    return f"{drift_prefix(ns, model, version)}:~bins"


def drift_versions(ns: str, model: str) -> str:
    """Set: the model's versions that have drift state (no tag: used alone)."""
    return f"{ns}:drift:{model}:~versions"


# ---- outcomes (stream.outcomes) --------------------------------------------------------------


def join_key(ns: str, suffix: str) -> str:
    """The outcome joiner's join state (each key used alone: no tag)."""
    return f"{ns}:join:{suffix}"


def outcomes_key(ns: str, model: str, version: int, suffix: str) -> str:
    return f"{{{ns}:outcomes:{model}:{version}}}:{suffix}"


# ---- registry (inference.registry) -----------------------------------------------------------


def registry_prefix(ns: str) -> str:
    return f"{{{ns}:registry}}"


def namespace_patterns(ns: str) -> tuple[str, str]:
    """``SCAN`` patterns that together match every key of namespace `ns`: the untagged keys and
    the hash-tagged ones (whose names start with ``{``).

    >>> namespace_patterns("dl")
    ('dl:*', '{dl:*')
    """
    return f"{ns}:*", f"{{{ns}:*"


def delete_namespace(r: RedisClient, ns: str, count: int = 1000) -> int:
    """Delete every key of namespace `ns` (a benchmark's, a demo's): how many were deleted. On a
    cluster, keys of different slots are deleted one command per key (``DEL`` of many keys must
    stay in one slot)."""
    deleted = 0
    for pattern in namespace_patterns(ns):
        batch: list[bytes | str] = []
        for key in r.scan_iter(match=pattern, count=count):
            batch.append(key)
            if len(batch) >= count:
                deleted += _delete(r, batch)
                batch = []
        deleted += _delete(r, batch)
    return deleted


def _delete(r: RedisClient, keys: list[bytes | str]) -> int:
    from redis.cluster import RedisCluster

    if not keys:
        return 0
    if isinstance(r, RedisCluster):  # one slot per command
        return sum(int(r.delete(k)) for k in keys)
    return int(r.delete(*keys))


# ---- slots -----------------------------------------------------------------------------------


def slot_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: its hash tag if it has a non-empty one."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    """The cluster hash slot of `key` (CRC16-XMODEM of its tag, mod 16384), as Redis computes it."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode()))
