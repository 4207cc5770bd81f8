"""The feature store's Redis key names, one function per key (what each holds:
`feature_store.online`; how they share slots with the other components' keys on a Redis
Cluster: `driftline.redis_keys`).

A source partition's keys share the hash tag ``{<ns>:fs:<view>:p<partition>}``, so its
``WATCH``/``MULTI`` touches one slot; the keys always used alone carry no tag.

>>> fs_entity("dl", "fraud", 3, "card-1")
'{dl:fs:fraud:p3}:entity:card-1'
>>> fs_where("dl", "fraud", "card-1")
'dl:fs:fraud:where:card-1'
"""

from __future__ import annotations


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
