"""The one Redis key layout (`driftline.redis_keys`), as the owning modules build it: every
multi-key operation's keys share a hash slot, and the keys used alone carry no tag."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import RedisClusterUnreachableError

from detectors.window_store import WindowStore, drift_prefix
from driftline.redis_keys import key_slot, slot_tag
from driftline.settings import Settings
from driftline.wiring import redis_address
from feature_store.definitions import fraud_feature_view
from feature_store.keys import fs_definition, fs_since, fs_where
from feature_store.online import OnlineStore
from inference.registry import ModelRegistry, registry_prefix
from stream.drift import alerts_key, history_key, incidents_key, latest_key, policy_key, versions_key

NEVER = redis.Redis(port=1)  # the constructors below never connect


def test_a_partition_of_the_feature_store_is_one_slot_and_partitions_spread() -> None:
    store = OnlineStore(NEVER, "dl", fraud_feature_view(), state_cache=0)
    for p in range(12):
        group = [store.entity_key(f"card-{i}", p) for i in range(50)]
        group += [store.offset_key("dl.events", p), store.replay_key("dl.events", p)]
        assert len({key_slot(k) for k in group}) == 1
    # 12 partitions fall on 12 different slots (a 3-master cluster spreads them over its nodes).
    assert len({key_slot(store.offset_key("dl.events", p)) for p in range(12)}) == 12
    layout = OnlineStore.key_layout("dl", "fraud")
    assert layout["entity"].startswith("{dl:fs:fraud:p") and layout["where"] == store.where_key("<entity_id>")


def test_one_versions_drift_keys_are_one_slot_whichever_module_builds_them() -> None:
    store = WindowStore(NEVER, "dl", "fraud", 3, {})
    group = [
        store.feature_key("amount", 1200.0),
        store.feature_key("amount", 1200.0) + ":sample",
        store.partitions_key,
        store.windows_key,
        store.offsets_key(1200.0),
        store.closed_key(1200.0),
        store.outbox_key,
        store.pending_key,
        policy_key("dl", "fraud", 3),
        alerts_key("dl", "fraud", 3),
        incidents_key("dl", "fraud", 3),
        latest_key("dl", "fraud", 3),
        history_key("dl", "fraud", 3),
    ]
    assert {slot_tag(k) for k in group} == {"dl:drift:fraud:3"}
    assert (
        store.partitions_key.startswith(drift_prefix("dl", "fraud", 3) + ":")
        and drift_prefix("dl", "fraud", 3) == "{dl:drift:fraud:3}"
    )
    assert slot_tag(policy_key("dl", "fraud", 4)) != slot_tag(policy_key("dl", "fraud", 3))


def test_the_registry_is_one_slot() -> None:
    registry = ModelRegistry(NEVER, "dl")
    group = [
        registry._models_key(),
        registry._meta_key("fraud", 2),
        registry._deployment_key("fraud"),
        registry._model_key("other", "events"),
        registry.artifact_key("ab" * 32),
    ]
    assert {slot_tag(k) for k in group} == {"dl:registry"} and registry_prefix("dl") == "{dl:registry}"


def test_the_keys_used_alone_carry_no_tag() -> None:
    alone = [fs_where("dl", "fraud", "card-1"), fs_definition("dl", "fraud"), fs_since("dl", "fraud")]
    alone.append(versions_key("dl", "fraud"))
    assert all(slot_tag(k) == k and k.startswith("dl:") for k in alone), alone


def test_slot_tags_follow_the_cluster_spec() -> None:
    assert slot_tag("{user1000}.following") == "user1000"
    assert slot_tag("foo{}{bar}") == "foo{}{bar}"  # an empty tag: the whole key
    assert slot_tag("foo{{bar}}zap") == "{bar"
    assert key_slot("123456789") == 12739  # CRC16-XMODEM's check value, mod 16384


def test_a_cluster_url_gives_a_cluster_client_and_a_printable_address() -> None:
    s = Settings(redis_url="redis+cluster://u:secret@127.0.0.1:1,127.0.0.1:2", redis_password="other")
    assert s.redis_host_port == ("127.0.0.1", 1)
    assert redis_address(s) == "redis+cluster://127.0.0.1:1,127.0.0.1:2"  # no password
    # A cluster client reads the slot map at once: nothing listens on ports 1 and 2.
    with pytest.raises(RedisClusterUnreachableError):
        s.redis_client(socket_timeout=0.2, connect_timeout=0.2)
