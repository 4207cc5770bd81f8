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
                                                           (the versions with drift state), the
                                                           replica barrier's markers
                                                           ``<ns>:replicated:<i>`` (one per master,
                                                           `stream.replication`; 60 s TTL)
=========================================================  =======================================

With a single Redis the tags change nothing (one server holds every slot), so the layout and
the code paths are the same for both. The owning modules build their keys and their docstrings
list each key's type and meaning: `feature_store.keys` and `feature_store.online`,
`detectors.window_store` (``drift_prefix``, the version's tag, which `stream.drift` builds its
keys on too), `detectors.policy_store`, `stream.drift`, `stream.outcomes`, `inference.registry`
(``registry_prefix``). The libraries import nothing from here (they are the composition
root's dependencies, not the other way round); this module holds the layout's one description,
the slot rule and the tools that span every family (`delete_namespace`), and
``tests/unit/test_redis_keys.py`` checks the owners against the table.

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

>>> slot_tag("{dl:drift:fraud:2}:~policy")
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

# ---- tools: every key of a namespace ------------------------------------------------------


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
