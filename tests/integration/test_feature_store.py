"""The online feature store against the real Redis of the local stack (`driftline stack up`).

Each test gets its own namespace, whose keys are deleted afterwards (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import redis
from redis.connection import Connection

from driftline.settings import Settings
from feature_store.definitions import fraud_feature_view
from feature_store.historical import EventLog, replay
from feature_store.online import OnlineStore, StateMismatch, WriteResult
from tests.unit.test_feature_store_streams import Stream, mixed_view, random_stream

pytestmark = pytest.mark.integration


class CountingConnection(Connection):
    """Counts round trips: every request this client makes is one send_packed_command."""

    sent: list[int] = []  # noqa: RUF012 - shared on purpose, read by the tests

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent.append(1)
        super().send_packed_command(command, check_health)


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    url = Settings().redis_url
    r = redis.Redis.from_url(url, connection_class=CountingConnection, health_check_interval=0)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the feature store tests need Redis at {url} (`driftline stack up`): {exc}")
    yield r
    r.close()


@pytest.fixture
def namespace(new_prefix: Callable[[str], str]) -> str:
    return new_prefix("fs")  # its keys (and those of "<namespace>-x") are deleted after the test


def _write(store: OnlineStore, s: Stream, start: int, stop: int, source: str = "events") -> WriteResult:
    return store.write_batch(**s.batch(start, stop), source=source)


def _round_trips(client: redis.Redis) -> int:
    return len(CountingConnection.sent)


def test_write_then_read_the_latest_features(client: redis.Redis, namespace: str) -> None:
    view = mixed_view()
    store = OnlineStore(client, namespace, view)
    s = random_stream(21, 600, entities=5, late=0.0, too_late=0.0)
    result = _write(store, s, 0, 600)
    assert result.applied.all() and not result.replayed.any() and not result.rejected
    assert result.features.shape == (600, len(view.feature_names()))
    assert result.categorical["kind"] == s.values["kind"]
    last = {e: i for i, e in enumerate(s.entity_ids)}
    entities = [*last, "nobody"]
    latest = store.get_online_features(entities)
    # In an ordered stream an entity's latest features are those of its last event.
    np.testing.assert_array_equal(latest[:-1], result.features[list(last.values())])
    assert np.isnan(latest[-1]).all()
    subset = store.get_online_features(["ent-1", "ent-1"], ["count_1h", "amount_sum_1h"])
    j = [view.feature_names().index(n) for n in ("count_1h", "amount_sum_1h")]
    np.testing.assert_array_equal(subset, result.features[[last["ent-1"]] * 2][:, j])

    described = store.describe("ent-1")
    assert described is not None and store.describe("nobody") is None
    i = last["ent-1"]
    assert described.as_of.timestamp() == pytest.approx(s.ts[i], abs=1e-3)
    assert described.values["kind"] == s.values["kind"][i]
    assert described.values["count_1h"] == result.features[i, view.feature_names().index("count_1h")]
    assert described.events == s.entity_ids.count("ent-1")
    partition = store.locate("ent-1")
    assert partition == int(s.partitions[s.entity_ids.index("ent-1")])
    raw = client.hget(store.entity_key("ent-1", partition), "features")
    assert isinstance(raw, bytes) and b'"count_1h":' in raw
    assert result.columns(["kind", "count_1h"])["kind"] == s.values["kind"]


def test_writing_a_batch_again_applies_nothing_and_returns_the_same_features(
    client: redis.Redis, namespace: str
) -> None:
    store = OnlineStore(client, namespace, mixed_view())
    s = random_stream(22, 800, entities=6, partitions=2)
    first = _write(store, s, 0, 800)
    assert first.rejected  # the stream has too-late events
    before = {k: client.hgetall(k) for k in client.scan_iter(f"{{{namespace}:*:entity:*")}
    again = _write(store, s, 0, 800)
    assert again.replayed.all() and not again.applied.any() and not again.replay_missed
    np.testing.assert_array_equal(again.features, first.features)
    assert again.categorical == first.categorical
    assert again.rejected == first.rejected
    assert {k: client.hgetall(k) for k in client.scan_iter(f"{{{namespace}:*:entity:*")} == before
    assert store.watermark("events", 0) == int(s.offsets[s.partitions == 0].max())


def test_a_partly_replayed_batch_applies_only_the_new_events(client: redis.Redis, namespace: str) -> None:
    view = mixed_view()
    store = OnlineStore(client, namespace, view)
    s = random_stream(23, 900, entities=6, partitions=3)
    first = _write(store, s, 0, 500)
    second = _write(store, s, 300, 900)  # a consumer rewound to 300 after a crash
    assert second.replayed[:200].all() and not second.replayed[200:].any()
    np.testing.assert_array_equal(second.features[:200], first.features[300:])
    expected = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    np.testing.assert_array_equal(np.vstack([first.features, second.features[200:]]), expected.features)


def test_a_write_that_fails_midway_leaves_nothing_behind(
    client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OnlineStore(client, namespace, mixed_view())
    s = random_stream(24, 300)
    from feature_store import online

    real = online._transactions

    def broken(conns: list[Connection], groups: list[list[bytes]]) -> list[list[Any] | None]:
        # The write: the connection drops after MULTI and every command, before EXEC is sent.
        for conn, commands in zip(conns, groups, strict=True):
            conn.send_packed_command([b"".join((online._MULTI, *commands))])
        raise redis.ConnectionError("lost the connection")

    monkeypatch.setattr(online, "_transactions", broken)
    with pytest.raises(redis.ConnectionError):
        _write(store, s, 0, 300)
    monkeypatch.setattr(online, "_transactions", real)
    assert list(client.scan_iter(f"*{namespace}:*")) == []  # MULTI without EXEC: nothing written
    result = _write(store, s, 0, 300)
    assert result.applied.sum() == 300 - len(result.rejected)


def test_a_concurrent_writer_of_the_partition_is_fenced(client: redis.Redis, namespace: str) -> None:
    view = mixed_view()
    s = random_stream(25, 400, partitions=1)
    store, zombie = OnlineStore(client, namespace, view), OnlineStore(client, namespace, view)

    class Racing(OnlineStore):
        raced = False

        def _read(self, conns: list[Connection], groups: Any, batch: Any) -> Any:
            read = super()._read(conns, groups, batch)
            if not self.raced:  # another worker writes the same partition between our read and write
                self.raced = True
                zombie.write_batch(**s.batch(0, 250), source="events")
            return read

    racing = Racing(client, namespace, view)
    result = racing.write_batch(**s.batch(0, 400), source="events")
    assert result.replayed[:250].all() and not result.replayed[250:].any()
    expected = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    np.testing.assert_array_equal(result.features, expected.features)
    latest = store.get_online_features(sorted(set(s.entity_ids)))
    events = [store.describe(e) for e in sorted(set(s.entity_ids))]
    assert [e.events for e in events if e] == [
        int(expected.applied[[x == e for x in s.entity_ids]].sum()) for e in sorted(set(s.entity_ids))
    ]
    assert not np.isnan(latest).all()


def test_every_key_has_a_ttl(client: redis.Redis, namespace: str) -> None:
    now = [1_800_000_000.0]
    hour = 3600 * 1000
    store = OnlineStore(client, namespace, mixed_view(), ttl=timedelta(hours=8), clock=lambda: now[0])
    s = random_stream(26, 600, partitions=2)
    entity = s.entity_ids[0]
    assert entity in s.entity_ids[200:400] and entity in s.entity_ids[400:]
    _write(store, s, 0, 200)
    keys = list(client.scan_iter(f"*{namespace}:*"))
    roles = {
        k.decode().split("}:")[-1].split(":")[0] if b"}" in k else k.decode().split(":")[3] for k in keys
    }
    assert roles == {"entity", "offset", "replay", "where", "definition", "since"}
    assert all(0 < client.pttl(k) <= 8 * hour for k in keys)
    # An entity's TTL is set again by a write only once it was set more than ttl / 8 (1 h) ago.
    key = store.entity_key(entity, int(s.partitions[s.entity_ids.index(entity)]))
    client.pexpire(key, hour)
    now[0] += 1800
    _write(store, s, 200, 400)
    assert 0 < client.pttl(key) <= hour
    now[0] += 3600
    _write(store, s, 400, 600)
    assert client.pttl(key) > 7 * hour
    assert all(client.pttl(k) > 0 for k in client.scan_iter(f"*{namespace}:*"))


def test_one_round_trip_to_read_and_one_to_write(client: redis.Redis, namespace: str) -> None:
    store = OnlineStore(client, namespace, fraud_feature_view())
    s = random_stream(27, 2000, entities=500, partitions=4)
    values = {name: [1.0] * 2000 for name in fraud_feature_view().passthrough}
    fraud = Stream(s.entity_ids, s.ts, values, s.partitions, s.offsets)
    _write(store, fraud, 0, 1000)  # connections warm
    start = _round_trips(client)
    _write(store, fraud, 1000, 2000)
    assert _round_trips(client) - start == 2
    start = _round_trips(client)
    store.get_online_features(fraud.entity_ids[:1000])
    assert _round_trips(client) - start == 2  # the entities' partitions, then their features
    start = _round_trips(client)
    store.describe("ent-3")
    assert _round_trips(client) - start == 2
    start = _round_trips(client)
    _write(store, fraud, 1000, 2000)  # all replayed: read, then UNWATCH
    assert _round_trips(client) - start == 2


def test_online_features_equal_historical_replay_for_20000_events(
    client: redis.Redis, namespace: str
) -> None:
    view = fraud_feature_view()
    n = 20_000
    rng = np.random.default_rng(28)
    base = random_stream(28, n, entities=300, partitions=4, mean_gap_s=4.0)
    values: dict[str, list[Any]] = {
        name: rng.lognormal(1, 1, n).round(4).tolist() for name in view.passthrough
    }
    values["amount"] = [None if rng.random() < 0.02 else v for v in values["amount"]]
    values["merchant_category"] = rng.choice(["grocery", "travel", "gas", "online"], n).tolist()
    values["country"] = rng.choice(["DE", "US", "FR", "NG"], n).tolist()
    s = Stream(base.entity_ids, base.ts, values, base.partitions, base.offsets)
    store = OnlineStore(client, namespace, view)
    online = np.full((n, len(view.feature_names())), np.nan)
    rejected: dict[int, str] = {}
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 2000)))
        result = _write(store, s, start, stop)
        online[start:stop] = result.features
        rejected.update({start + i: r for i, r in result.rejected.items()})
        start = stop
    history = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    assert rejected == history.rejected and len(rejected) > 100
    sample = rng.choice(n, 1000, replace=False)
    picks = [(int(s.partitions[i]), int(s.offsets[i])) for i in sample]
    np.testing.assert_array_equal(online[sample], history.features_for(picks))  # bit for bit
    np.testing.assert_allclose(online[sample], history.features_for(picks), rtol=1e-9, atol=1e-9)


def test_replays_beyond_the_kept_results_are_reported(client: redis.Redis, namespace: str) -> None:
    store = OnlineStore(client, namespace, mixed_view(), replay_retention=50)
    s = random_stream(29, 400, partitions=1)
    for start in range(0, 400, 100):
        _write(store, s, start, start + 100)
    again = _write(store, s, 200, 400)
    assert again.replayed.all()
    missed = set(again.replay_missed)
    assert missed and all(i < 150 for i in missed)  # offsets 200..349 are past the retention
    assert np.isnan(again.features[sorted(missed)]).all()
    kept = [i for i in range(150, 200) if i not in again.rejected]
    assert kept and not np.isnan(again.features[kept, 3]).any()  # count_10m


def test_a_changed_definition_is_refused(client: redis.Redis, namespace: str) -> None:
    s = random_stream(30, 50)
    _write(OnlineStore(client, namespace, mixed_view()), s, 0, 50)
    changed = mixed_view().model_copy(update={"allowed_lateness": timedelta(minutes=1)})
    with pytest.raises(StateMismatch, match="another definition"):
        _write(OnlineStore(client, namespace, changed), random_stream(30, 60), 50, 60)


def test_a_transaction_skips_queued_replies_and_still_reports_errors(
    client: redis.Redis, namespace: str
) -> None:
    from feature_store import online

    key, other = f"{namespace}:t".encode(), f"{namespace}:u".encode()
    conn = client.connection_pool.get_connection()
    try:
        sets = [online._command(b"SET", key, b"%d" % i, b"PX", b"60000") for i in range(500)]
        replies = online._transaction(conn, [*sets, online._command(b"GET", key)])
        assert replies is not None and replies[-1] == b"499" and len(replies) == 501
        # A command refused while queueing (wrong arity) aborts the transaction with its error...
        with pytest.raises(redis.ResponseError):
            online._transaction(conn, [sets[0], online._command(b"SET", other)])
        conn.disconnect()
        assert client.get(key) == b"499"
        # ... and a watched key that changed makes EXEC write nothing.
        online._roundtrip(conn, [online._command(b"WATCH", key)])
        client.set(key, b"moved", px=60000)
        assert online._transaction(conn, [online._command(b"SET", other, b"1", b"PX", b"60000")]) is None
        assert client.get(other) is None
    finally:
        conn.disconnect()
        client.connection_pool.release(conn)


def _hgets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the state reads (HGET ... state) of every round trip from now on."""
    from feature_store import online

    real, counts = online._roundtrips, []

    def counting(conns: list[Connection], payloads: list[list[bytes]]) -> list[list[Any]]:
        counts.append(
            sum(c.startswith(b"*3\r\n$4\r\nHGET") and c.endswith(b"state\r\n") for cs in payloads for c in cs)
        )
        return real(conns, payloads)

    monkeypatch.setattr(online, "_roundtrips", counting)
    return counts


def test_the_state_cache_skips_state_reads_and_changes_no_feature(
    client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = mixed_view()
    s = random_stream(31, 3000, entities=40, partitions=3)
    cached, plain = (
        OnlineStore(client, namespace, view),
        OnlineStore(client, namespace + "-x", view, state_cache=0),
    )
    reads = _hgets(monkeypatch)
    rng = np.random.default_rng(31)
    start = 0
    while start < len(s):
        stop = min(len(s), start + int(rng.integers(50, 400)))
        a, b = _write(cached, s, start, stop), _write(plain, s, start, stop)
        np.testing.assert_array_equal(a.features, b.features)
        assert a.rejected == b.rejected and a.categorical == b.categorical
        start = stop
    assert cached.cache is not None and len(cached.cache) == 40
    per_store = reads[0::2], reads[1::2]  # the stores alternate, one read round trip each
    assert sum(per_store[0][1:]) == 0 and min(per_store[1][1:]) > 0  # after its first batch: none
    expected = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    np.testing.assert_array_equal(cached.get_online_features(["ent-1"]), plain.get_online_features(["ent-1"]))
    assert cached.describe("ent-1") is not None and expected.applied.sum() > 2500


def test_a_cached_state_is_dropped_once_another_writer_moved_its_partition(
    client: redis.Redis, namespace: str
) -> None:
    view = mixed_view()
    s = random_stream(32, 1200, entities=12, partitions=2)
    a, b = OnlineStore(client, namespace, view), OnlineStore(client, namespace, view)
    first = _write(a, s, 0, 400)
    second = _write(b, s, 400, 800)  # the partitions moved to b for a while (a rebalance) ...
    third = _write(a, s, 800, 1200)  # ... and came back: a's cached states are 400 events old
    expected = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    online = np.vstack([first.features, second.features, third.features])
    np.testing.assert_array_equal(online, expected.features)


def test_a_cached_state_older_than_the_ttl_is_read_again(
    client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_800_000_000.0]
    store = OnlineStore(client, namespace, mixed_view(), ttl=timedelta(hours=8), clock=lambda: now[0])
    s = random_stream(33, 300, entities=3, partitions=1)
    _write(store, s, 0, 100)
    reads = _hgets(monkeypatch)
    _write(store, s, 100, 200)
    now[0] += 9 * 3600  # Redis may have expired the entities meanwhile
    _write(store, s, 200, 300)
    assert reads[0] == 0 and reads[1] == 3
