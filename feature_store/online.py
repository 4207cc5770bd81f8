"""The Redis online store: applies event batches to entity states and serves the latest features.

Keys of a view, under ``<p> = <ns>:fs:<view>`` and, per source partition, under the hash tag
``<t> = {<ns>:fs:<view>:p<partition>}`` (built by `feature_store.keys`; `driftline.redis_keys`:
a Redis Cluster keeps each partition's keys on one slot); every key has a TTL (``ttl``, default
7 days):

======================================  ========================================================
``<t>:entity:<entity_id>``              hash, one per entity (under its events' partition):
                                        ``features``: JSON object, every feature's latest value
                                        (number, category string, or null = undefined);
                                        ``as_of``: the entity's newest event time, which the
                                        values are as of (RFC 3339); ``updated_at``: wall time
                                        of the last write (RFC 3339); ``events``: events applied;
                                        ``latest``: the numeric features packed (float64, for
                                        `get_online_features`); ``state``: the packed tiles
                                        (`Engine.encode`, after 8 bytes: when the TTL was set)
``<t>:offset:<source>``                 string: the watermark, highest offset of (source,
                                        partition) applied
``<t>:replay:<source>``                 sorted set: each batch's per-event results (one member
                                        per batch, score = its last offset), kept for the last
                                        ``replay_retention`` offsets, for replays
``<p>:where:<entity_id>``               string: the partition whose tag holds the entity's hash
                                        (set with a new entity and when its TTL is renewed), so
                                        readers find an entity by its id alone
``<p>:definition``                      string: the `FeatureView` JSON, for tools
``<p>:since``                           sorted set, one member ``first``: the earliest event
                                        time the store applied (``ZADD LT``), when its
                                        aggregates' warm-up began (`feature_store.warmup`)
======================================  ========================================================

``redis-cli -c HGET '{dl:fs:fraud:p3}:entity:card-000317' features`` prints an entity's features
(its partition: ``redis-cli -c GET dl:fs:fraud:where:card-000317``). The TTL of an
entity hash is set when it is created and again by any write that finds it set more than
``ttl / 8`` ago (so an entity written at least that often never expires); the other keys get it
on every write. Per entity the store keeps at most ``Engine.state_bytes`` of state (2.6 kB for
`fraud_feature_view`, about 0.8 kB as packed: `Engine.encode_many`) plus its readable record
(about 1 kB); neither grows with its events.

**Writes.** `OnlineStore.write_batch` holds one connection for two round trips (on a Redis
Cluster: one connection per partition of the batch, to the master of its slot, all sent at once;
the keys of no partition - ``definition``, ``since``, ``where`` - are then written just before the
transactions instead of in them, each write idempotent). The first
sends ``WATCH`` on the batch's partition watermarks, then reads them, the stored results at or
above the batch's offsets and the states of the entities its `StateCache` does not hold (the
states this writer stored last, used only while their partition's watermark is still the one it
wrote: `feature_store.state_cache`). Events at or below their partition's watermark
are *replayed*: not applied again, their features taken from the stored results. The others are
applied by the engine, in order, each seeing exactly the events before it. The second round trip
is one ``MULTI ... EXEC`` writing the states, records, watermarks and results together; ``EXEC``
writes nothing if a watermark changed meanwhile (another worker on the same partition), and the
batch is then read and computed again. So a batch re-read after a crash never counts an event
twice and gets the features it got the first time. (A batch of replays only ends in ``UNWATCH``.)
A replayed event older than the kept results gets NaN features, listed in
`WriteResult.replay_missed`.

The watermark is the fence, so each entity's events must come from one partition (Kafka keyed by
entity): two writers on different partitions updating one entity at once could lose an update
(never count one twice). Commands are packed here (RESP) and sent in one write per round trip;
the client must return bytes (``decode_responses=False``, the default). On a Redis Cluster an
entity's events must come from one partition (a batch mixing them is refused: its hash could not
be fenced by both watermarks), and a cluster error (a failover, a moved slot) makes the next batch
re-read the slot map. Reads (`get_online_features`, `describe`) take two round trips: the
entities' ``where``, then their hashes.

>>> OnlineStore.key_layout("dl", "fraud")["entity"]
'{dl:fs:fraud:p<partition>}:entity:<entity_id>'
>>> _command(b"SET", b"k", b"v")
b'*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n'
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import hiredis
import numpy as np
import orjson
import redis
from pydantic import BaseModel, ConfigDict
from redis.cluster import RedisCluster
from redis.connection import Connection, ConnectionPool

from feature_store import keys
from feature_store.definitions import FeatureView
from feature_store.engine import Column, Columns, Engine, RunOutcome, StateMismatch, Tails
from feature_store.state_cache import StateCache
from feature_store.warmup import SINCE_MEMBER

__all__ = ["EntityFeatures", "OnlineStore", "StateMismatch", "WriteConflict", "WriteResult"]

_RESULTS_HEAD = 20  # a results member starts with its first offset, zero-padded
_TTL_AT = struct.Struct("<q")  # the state field starts with when the hash's TTL was set (ms)
# HSET <key> state <s> latest <l> features <f> as_of <a> updated_at <u> events <e>, packed at once.
_HSET = (
    b"*14\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$5\r\nstate\r\n$%d\r\n%s\r\n$6\r\nlatest\r\n$%d\r\n%s%s\r\n"
    b"$8\r\nfeatures\r\n$%d\r\n%s\r\n$5\r\nas_of\r\n$%d\r\n%s\r\n%s"
    b"$6\r\nevents\r\n$%d\r\n%s\r\n"
)  # the updated_at pair (the same for the whole batch) is packed once
_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"


def _command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _send(conn: Connection, payload: bytes) -> socket.socket:
    """Send packed commands in one write; the socket their replies come back on."""
    conn.send_packed_command([payload])
    sock = conn._sock
    if sock is None:
        raise redis.ConnectionError("the Redis connection closed before its replies arrived")
    return sock


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise redis.ConnectionError("the Redis connection closed before its replies arrived")
    return data


def _replies(sock: socket.socket, reader: hiredis.Reader, wanted: int) -> list[Any]:
    """Read ``wanted`` replies with a hiredis reader of our own (error replies are raised)."""
    replies: list[Any] = []
    while len(replies) < wanted:
        reply = reader.gets()
        if reply is False:
            reader.feed(_recv(sock))
        elif isinstance(reply, redis.ResponseError):
            raise reply
        else:
            replies.append(reply)
    return replies


def _roundtrip(conn: Connection, commands: list[bytes]) -> list[Any]:
    """Send commands in one write and read one reply per command (error replies are raised).

    The replies are parsed by a hiredis reader of our own, in bulk: redis-py's
    ``read_response`` costs ~10 us a reply, a third of a 1,000-event batch's time. Every
    round trip reads all its replies, so the connection's own parser never holds any.
    """
    sock = _send(conn, b"".join(commands))
    return _replies(sock, hiredis.Reader(replyError=redis.ResponseError), len(commands))


def _roundtrips(conns: list[Connection], payloads: list[list[bytes]]) -> list[list[Any]]:
    """`_roundtrip` on several connections at once: every payload sent, then the replies read."""
    socks = [_send(c, b"".join(cmds)) if cmds else None for c, cmds in zip(conns, payloads, strict=True)]
    return [
        [] if sock is None else _replies(sock, hiredis.Reader(replyError=redis.ResponseError), len(cmds))
        for sock, cmds in zip(socks, payloads, strict=True)
    ]


_MULTI = _command(b"MULTI")
_EXEC = _command(b"EXEC")
_QUEUED = b"+QUEUED\r\n"


def _transactions(conns: list[Connection], groups: list[list[bytes]]) -> list[list[Any] | None]:
    """``MULTI``, commands, ``EXEC`` in one round trip per connection (all sent, then read): each
    EXEC's replies, or None if it aborted (a watched key changed). A connection with no command
    only ends its ``WATCH``.

    A queued command's reply is ``+QUEUED``: rather than parse a thousand of them, the bytes
    are compared with what they must be, and only EXEC's reply is parsed. Anything else (a
    command refused while queueing) falls back to reading every reply, raising the error.
    """
    socks = [
        _send(c, b"".join((_MULTI, *cmds, _EXEC)) if cmds else _command(b"UNWATCH"))
        for c, cmds in zip(conns, groups, strict=True)
    ]
    out: list[list[Any] | None] = []
    for sock, commands in zip(socks, groups, strict=True):
        reader = hiredis.Reader(replyError=redis.ResponseError)
        if not commands:
            _replies(sock, reader, 1)
            out.append([])
            continue
        expected = b"+OK\r\n" + _QUEUED * len(commands)
        data = b""
        while len(data) < len(expected) and expected.startswith(data):
            data += _recv(sock)
        if data.startswith(expected):
            reader.feed(data[len(expected) :])
            out.append(cast(list[Any] | None, _replies(sock, reader, 1)[0]))
        else:
            reader.feed(data)
            out.append(cast(list[Any] | None, _replies(sock, reader, len(commands) + 2)[-1]))
    return out


def _transaction(conn: Connection, commands: list[bytes]) -> list[Any] | None:
    """`_transactions` on one connection."""
    return _transactions([conn], [commands])[0]


def _wall_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class WriteConflict(RuntimeError):
    """Other writers kept moving the batch's watermarks; nothing was written."""


@dataclass
class WriteResult:
    """What `OnlineStore.write_batch` did with each event (index = position in the batch)."""

    feature_names: list[str]
    features: np.ndarray  # float64 [n, features]: each event's features as of that event
    categorical: dict[str, list[str | None]]  # categorical passthrough values (NaN in `features`)
    applied: np.ndarray  # bool [n]: applied by this call
    replayed: np.ndarray  # bool [n]: at or below the watermark, so applied by an earlier call
    rejected: dict[int, str] = field(default_factory=dict)  # too late (now, or when first seen)
    replay_missed: list[int] = field(default_factory=list)  # replayed, results no longer kept: NaN

    def columns(self, names: Sequence[str]) -> dict[str, list[Any] | np.ndarray]:
        """Feature columns by name, for a model: float64 arrays (NaN = undefined) and lists of
        category strings. Arrays, not lists: the model encoding and the detectors take them as
        they are (a list of floats costs them a conversion per value)."""
        index = {name: j for j, name in enumerate(self.feature_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise KeyError(f"not features of this view: {', '.join(unknown)}")
        return {
            name: self.categorical[name] if name in self.categorical else self.features[:, index[name]].copy()
            for name in names
        }


class EntityFeatures(BaseModel):
    """The latest features of one entity, as ``driftline features get`` shows them."""

    model_config = ConfigDict(frozen=True)

    view: str
    entity_id: str
    as_of: datetime  # the entity's newest event time: every value is as of it
    updated_at: datetime  # wall time of the write that produced these values
    events: int  # events applied so far
    values: dict[str, float | str | None]  # every feature of the view; None = undefined


@dataclass
class _Batch:
    """One `OnlineStore.write_batch` call's input, checked and converted once."""

    source: str
    entities: list[str]  # distinct, in order of first appearance
    rows: np.ndarray  # each event's entity, as an index into `entities`
    times: np.ndarray
    parts: np.ndarray
    offs: np.ndarray
    spans: dict[int, tuple[int, int]]  # partition -> (lowest, highest offset in the batch)
    cols: Columns
    entity_part: np.ndarray  # each entity's partition (-1: its events come from several)
    home: np.ndarray  # the partition of each entity's first event: the tag of its hash key
    keys: list[bytes] = field(default_factory=list)  # each entity's hash key

    @classmethod
    def of(
        cls,
        engine: Engine,
        entity_ids: Sequence[str],
        ts: np.ndarray | Sequence[float],
        values: Mapping[str, Column],
        partitions: Sequence[int] | np.ndarray,
        offsets: Sequence[int] | np.ndarray,
        source: str,
    ) -> _Batch:
        n = len(entity_ids)
        times = np.asarray(ts, dtype=np.float64).reshape(-1)
        parts = np.asarray(partitions, dtype=np.int64).reshape(-1)
        offs = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if not len(times) == len(parts) == len(offs) == n:
            raise ValueError(
                f"entity_ids, ts, partitions and offsets differ in length: {n}, {len(times)}, "
                f"{len(parts)}, {len(offs)}"
            )
        order = np.lexsort((np.arange(n), parts))
        same = parts[order][1:] == parts[order][:-1]
        if (same & (offs[order][1:] <= offs[order][:-1])).any():
            raise ValueError("offsets must increase within each partition, in batch order")
        entities = list(dict.fromkeys(entity_ids))
        row_of = {e: i for i, e in enumerate(entities)}
        rows = np.fromiter((row_of[e] for e in entity_ids), dtype=np.int64, count=n)
        spans = {int(p): (int(offs[parts == p].min()), int(offs[parts == p].max())) for p in np.unique(parts)}
        home = parts[np.unique(rows, return_index=True)[1]]  # of each entity's first event
        entity_part = home.copy()
        entity_part[rows[parts != entity_part[rows]]] = -1
        cols = engine.columns(values, n)
        return cls(source, entities, rows, times, parts, offs, spans, cols, entity_part, home)


@dataclass
class _Read:
    watermarks: dict[int, int | None]
    results: dict[int, list[bytes]]
    blobs: list[bytes | None]  # packed states (None: a new entity, or cached)
    ttl_at: list[int | None]  # when each entity's TTL was set, ms
    cached: np.ndarray  # bool [entities]: the state comes from the state cache, not Redis
    cached_states: np.ndarray  # their states, in order


class OnlineStore:
    """Entity states and latest features of one `FeatureView` in Redis (see the module docstring)."""

    def __init__(
        self,
        redis_client: redis.Redis | RedisCluster,
        namespace: str,
        view: FeatureView,
        ttl: timedelta = timedelta(days=7),
        replay_retention: int = 20_000,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 20,
        state_cache: int = 10_000,
    ) -> None:
        horizon = max(view.windows(), default=timedelta(0)) + view.allowed_lateness
        if ttl <= horizon:
            raise ValueError(
                f"ttl {ttl} must exceed the longest window plus the allowed lateness ({horizon})"
            )
        if replay_retention < 1:
            raise ValueError("replay_retention must be >= 1")
        self._cluster = isinstance(redis_client, RedisCluster)
        conn_kwargs = (
            redis_client.nodes_manager.connection_kwargs
            if isinstance(redis_client, RedisCluster)
            else redis_client.connection_pool.connection_kwargs
        )
        if conn_kwargs.get("decode_responses"):
            raise ValueError("the online store needs a Redis client returning bytes (decode_responses=False)")
        self.r = redis_client
        self.view = view
        self.engine = Engine(view)
        self.names = self.engine.names
        self.namespace = namespace
        self._since = self.since_key(namespace, view.name).encode()
        self._stale_slots = False  # a cluster error: re-read the slot map before the next batch
        self.ttl_ms = int(ttl / timedelta(milliseconds=1))
        self.replay_retention = replay_retention
        self.clock = clock
        self.max_attempts = max_attempts
        self._ttl = b"%d" % self.ttl_ms
        self._definition = view.model_dump_json().encode()
        self._latest_size = len(self.engine.prefix) + 8 * len(self.names)
        # The states this writer stored last, so most batches need not read them (0: off).
        self.cache = StateCache(self.engine.width, state_cache) if state_cache > 0 else None

    # -- keys ------------------------------------------------------------------------------------

    @staticmethod
    def key_layout(namespace: str, view: str) -> dict[str, str]:
        """Every key pattern of a view, by role (see the module docstring)."""
        return {
            "entity": keys.fs_entity(namespace, view, "<partition>", "<entity_id>"),  # type: ignore[arg-type]
            "offset": keys.fs_offset(namespace, view, "<source>", "<partition>"),  # type: ignore[arg-type]
            "replay": keys.fs_replay(namespace, view, "<source>", "<partition>"),  # type: ignore[arg-type]
            "where": keys.fs_where(namespace, view, "<entity_id>"),
            "definition": keys.fs_definition(namespace, view),
            "since": keys.fs_since(namespace, view),
        }

    def entity_key(self, entity_id: str, partition: int) -> str:
        """The hash of an entity whose events come from `partition` (see `locate`)."""
        return keys.fs_entity(self.namespace, self.view.name, partition, entity_id)

    def where_key(self, entity_id: str) -> str:
        return keys.fs_where(self.namespace, self.view.name, entity_id)

    def locate(self, entity_id: str) -> int | None:
        """The source partition whose tag holds the entity's hash (None: an unknown entity)."""
        raw = self.r.get(self.where_key(entity_id))
        return None if raw is None else int(cast(bytes, raw))

    def offset_key(self, source: str, partition: int) -> str:
        return keys.fs_offset(self.namespace, self.view.name, source, partition)

    def replay_key(self, source: str, partition: int) -> str:
        return keys.fs_replay(self.namespace, self.view.name, source, partition)

    def definition_key(self) -> str:
        return keys.fs_definition(self.namespace, self.view.name)

    @staticmethod
    def since_key(namespace: str, view: str) -> str:
        """The sorted set holding the earliest event time the store of `view` applied."""
        return keys.fs_since(namespace, view)

    def watermark(self, source: str, partition: int) -> int | None:
        """Highest offset of (source, partition) applied so far (None: none)."""
        raw = self.r.get(self.offset_key(source, partition))
        return None if raw is None else int(cast(bytes, raw))

    # -- writes ----------------------------------------------------------------------------------

    def write_batch(
        self,
        entity_ids: Sequence[str],
        ts: np.ndarray | Sequence[float],
        values: Mapping[str, Column],
        partitions: Sequence[int] | np.ndarray,
        offsets: Sequence[int] | np.ndarray,
        source: str,
    ) -> WriteResult:
        """Apply a batch of raw events (log order within each partition); return their features.

        ``ts``: event times, epoch seconds; ``values``: raw feature columns by name (numbers,
        strings, None); ``partitions``/``offsets``: each event's position in ``source``.
        """
        batch = _Batch.of(self.engine, entity_ids, ts, values, partitions, offsets, source)
        if not len(batch.rows):
            none = np.zeros(0, dtype=bool)
            cats: dict[str, list[str | None]] = {c: [] for c in self.engine.pt_categorical}
            return WriteResult(self.names, np.zeros((0, len(self.names))), cats, none, none)
        if self._cluster and (batch.entity_part < 0).any():
            e = int(np.flatnonzero(batch.entity_part < 0)[0])
            raise ValueError(
                f"the events of entity {batch.entities[e]!r} come from several partitions: on a Redis "
                "Cluster each entity's events must come from one partition (key the topic by entity)"
            )
        if self._stale_slots:
            self._refresh_slots()
        try:
            return self._write(batch)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
            self._stale_slots = self._cluster  # a failover or a resharding moves slots
            raise

    def _refresh_slots(self) -> None:
        assert isinstance(self.r, RedisCluster)
        self.r.nodes_manager.initialize()
        self._stale_slots = False

    def _write(self, batch: _Batch) -> WriteResult:
        for _ in range(self.max_attempts):
            with ExitStack() as stack:
                groups = self._groups(batch)
                conns = [stack.enter_context(self._session(pool)) for pool, _ in groups]
                read = self._read(conns, groups, batch)
                marks = [read.watermarks[p] for p in batch.parts.tolist()]
                marked = np.array([-1 if m is None else m for m in marks], dtype=np.int64)
                replayed = (marked >= 0) & (batch.offs <= marked)
                states, tails = self.engine.decode(read.blobs)
                if read.cached.any():
                    states[read.cached] = read.cached_states
                    tails.fallback = self._cached_tails(batch, read)
                out = self.engine.run(
                    states, batch.rows, batch.times, batch.cols, active=~replayed, tails=tails
                )
                result = WriteResult(
                    self.names, out.features, out.categorical, out.applied, replayed, out.rejected
                )
                self._fill_replayed(result, read.results, batch)
                if replayed.all():
                    for conn in conns:
                        _roundtrip(conn, [_command(b"UNWATCH")])
                    return result
                newest = self._newest_categories(out, result, tails)
                written = self._commit(conns, groups, batch, read, states, newest, out, result)
                if written is not None:
                    self._remember(batch, read, states, newest, result, written)
                    return result
                if self.cache is not None:
                    self.cache.drop(batch.source, list(batch.spans))
        raise WriteConflict(
            f"gave up writing a batch of {len(batch.rows)} events to view {self.view.name!r}: "
            f"its watermarks kept moving during {self.max_attempts} attempts"
        )

    def _cached_tails(self, batch: _Batch, read: _Read) -> Callable[[int], list[str | None] | None]:
        cache = self.cache
        assert cache is not None
        return lambda i: cache.tails(batch.entities[i]) if read.cached[i] else None

    def _newest_categories(
        self, out: RunOutcome, result: WriteResult, tails: Tails
    ) -> list[list[str | None]]:
        """Each entity's newest event's categorical passthrough values after the batch."""
        newest = out.newest.tolist()
        names = self.engine.pt_categorical
        if not names:
            return [[] for _ in newest]
        picked = [[result.categorical[c][i] for i in newest] for c in names]
        rows = list(map(list, zip(*picked, strict=True)))
        for e in np.flatnonzero(out.newest < 0).tolist():
            rows[e] = tails[e]  # no event of the batch became its newest
        return rows

    def _remember(
        self,
        batch: _Batch,
        read: _Read,
        states: np.ndarray,
        newest: list[list[str | None]],
        result: WriteResult,
        ttl_at: np.ndarray,
    ) -> None:
        """Keep the states just written in the state cache, with the partitions' watermarks."""
        if self.cache is None:
            return
        marks = {p: m for p, m in read.watermarks.items() if m is not None}
        for p in batch.spans:
            mine = ~result.replayed & (batch.parts == p)
            if mine.any():
                marks[p] = int(batch.offs[mine].max())
        keep = batch.entity_part >= 0
        if keep.all():
            entities, categories = batch.entities, newest
        else:
            index = np.flatnonzero(keep).tolist()
            entities, categories = [batch.entities[e] for e in index], [newest[e] for e in index]
        self.cache.store(
            batch.source,
            entities,
            batch.entity_part[keep].tolist(),
            states[keep],
            categories,
            ttl_at[keep].tolist(),
            marks,
        )

    def _groups(self, batch: _Batch) -> list[tuple[ConnectionPool, list[int]]]:
        """The batch's partitions by transaction: a single Redis takes them all in one; a cluster
        one per partition (its tag's slot), each on the connection pool of the slot's master."""
        parts = list(batch.spans)
        if not isinstance(self.r, RedisCluster):
            return [(self.r.connection_pool, parts)]
        out = []
        for p in parts:
            node = self.r.get_node_from_key(keys.fs_tag(self.namespace, self.view.name, p))
            conn = self.r.get_redis_connection(node)
            out.append((conn.connection_pool, [p]))
        return out

    @contextmanager
    def _session(self, pool: ConnectionPool | None = None) -> Iterator[Connection]:
        """A connection of our own for WATCH ... EXEC; closed if anything goes wrong midway."""
        if pool is None:
            assert isinstance(self.r, redis.Redis)
            pool = self.r.connection_pool
        conn = pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()  # drops any WATCH or MULTI in progress
            raise
        finally:
            pool.release(conn)

    def _read(
        self, conns: list[Connection], groups: list[tuple[ConnectionPool, list[int]]], batch: _Batch
    ) -> _Read:
        """The first round trip (one per transaction group, sent at once): WATCH the watermarks;
        read them, results for replays, and the states of the entities the state cache does not
        hold (a second round trip reads those it held for a partition whose watermark turns out
        to have moved)."""
        if not batch.keys:
            batch.keys = [
                self.entity_key(entity, home).encode()
                for entity, home in zip(batch.entities, batch.home.tolist(), strict=True)
            ]
        n = len(batch.entities)
        cached, cached_states = np.zeros(n, dtype=bool), np.zeros((0, self.engine.width))
        cached_ttl = np.zeros(0, dtype=np.int64)
        if self.cache is not None:
            now_ms = int(self.clock() * 1000)
            cached, cached_states, cached_ttl = self.cache.lookup(
                batch.source, batch.entities, batch.entity_part, now_ms, self.ttl_ms
            )
        group_of = self._entity_groups(batch, groups)
        ask = np.flatnonzero(~cached)
        asks = [ask[group_of[ask] == g].tolist() for g in range(len(groups))]
        payloads = []
        for (_, parts), mine in zip(groups, asks, strict=True):
            marks = [self.offset_key(batch.source, p).encode() for p in parts]
            commands = [_command(b"WATCH", *marks), _command(b"MGET", *marks)]
            for p in parts:
                lo = batch.spans[p][0]
                commands.append(
                    _command(b"ZRANGEBYSCORE", self.replay_key(batch.source, p).encode(), b"%d" % lo, b"+inf")
                )
            commands += [_HGET % (len(batch.keys[i]), batch.keys[i], 5, b"state") for i in mine]
            payloads.append(commands)
        watermarks: dict[int, int | None] = {}
        results = {}
        fields: list[bytes | None] = [None] * n
        for (_, parts), mine, replies in zip(groups, asks, _roundtrips(conns, payloads), strict=True):
            for p, w in zip(parts, replies[1], strict=True):
                watermarks[p] = None if w is None else int(w)
            for p, members in zip(parts, replies[2 : 2 + len(parts)], strict=True):
                mark = watermarks[p]
                top = -1 if mark is None else min(batch.spans[p][1], mark)
                results[p] = [m for m in members if int(m[:_RESULTS_HEAD]) <= top]
            for i, f in zip(mine, replies[2 + len(parts) :], strict=True):
                fields[i] = f
        if self.cache is not None and cached.any():
            stale = self.cache.valid(batch.source, watermarks)
            if stale:  # another writer moved these partitions: read their states after all
                again = cached & np.isin(batch.entity_part, list(stale))
                keep = again[cached]
                cached_states, cached_ttl = cached_states[~keep], cached_ttl[~keep]
                cached = cached & ~again
                redo = np.flatnonzero(again)
                redos = [redo[group_of[redo] == g].tolist() for g in range(len(groups))]
                got = _roundtrips(
                    conns,
                    [
                        [_HGET % (len(batch.keys[i]), batch.keys[i], 5, b"state") for i in mine]
                        for mine in redos
                    ],
                )
                for mine, replies in zip(redos, got, strict=True):
                    for i, f in zip(mine, replies, strict=True):
                        fields[i] = f
        blobs = [None if f is None else f[_TTL_AT.size :] for f in fields]
        ttl_at = [None if f is None else _TTL_AT.unpack_from(f)[0] for f in fields]
        for i, at in zip(np.flatnonzero(cached).tolist(), cached_ttl.tolist(), strict=True):
            ttl_at[i] = at
        return _Read(watermarks, results, blobs, ttl_at, cached, cached_states)

    @staticmethod
    def _entity_groups(batch: _Batch, groups: list[tuple[ConnectionPool, list[int]]]) -> np.ndarray:
        """Each entity's transaction group: the one of its hash's partition."""
        group_of_part = {p: g for g, (_, parts) in enumerate(groups) for p in parts}
        return np.fromiter(
            (group_of_part[h] for h in batch.home.tolist()), dtype=np.int64, count=len(batch.home)
        )

    def _fill_replayed(self, result: WriteResult, results: dict[int, list[bytes]], batch: _Batch) -> None:
        todo = np.flatnonzero(result.replayed)
        if not len(todo):
            return
        kept: dict[tuple[int, int], tuple[np.ndarray, dict[str, Any], int]] = {}
        for p, members in results.items():
            for member in members:
                head, rows = self._parse_results(member)
                for j, offset in enumerate(head["offsets"]):
                    kept[p, offset] = (rows, head, j)
        for i in todo.tolist():
            found = kept.get((int(batch.parts[i]), int(batch.offs[i])))
            if found is None:
                result.replay_missed.append(i)
                continue
            rows, head, j = found
            result.features[i] = rows[j]
            for name, values in head["categorical"].items():
                result.categorical[name][i] = values[j]
            reason = head["rejected"].get(str(head["offsets"][j]))
            if reason is not None:
                result.rejected[i] = reason

    def _parse_results(self, member: bytes) -> tuple[dict[str, Any], np.ndarray]:
        body = member[_RESULTS_HEAD:]
        cut = body.index(b"\n")
        head = orjson.loads(body[:cut])
        if head["view"] != self.engine.fingerprint:
            raise StateMismatch(
                f"stored results of view {self.view.name!r} belong to another definition of it"
            )
        rows = np.frombuffer(body[cut + 1 :], dtype="<f8").reshape(len(head["offsets"]), len(self.names))
        return head, rows

    def _results(self, items: np.ndarray, offs: np.ndarray, result: WriteResult) -> bytes:
        """One batch's per-event results of one partition, as kept for replays."""
        picked = items.tolist()
        offsets = offs[items].tolist()
        head = {
            "view": self.engine.fingerprint,
            "offsets": offsets,
            "rejected": {str(offs[i]): result.rejected[i] for i in picked if i in result.rejected},
            "categorical": {name: [values[i] for i in picked] for name, values in result.categorical.items()},
        }
        rows = result.features[items].astype("<f8", copy=False).tobytes()
        return b"%020d" % offsets[0] + orjson.dumps(head) + b"\n" + rows

    def _commit(
        self,
        conns: list[Connection],
        groups: list[tuple[ConnectionPool, list[int]]],
        batch: _Batch,
        read: _Read,
        states: np.ndarray,
        newest: list[list[str | None]],
        out: RunOutcome,
        result: WriteResult,
    ) -> np.ndarray | None:
        """The second round trip: MULTI, every write, EXEC (per transaction group, sent at once).
        None if a watermark moved, else when each entity's TTL was set (ms), as now stored.

        The keys of no partition (definition, since, the entities' ``where``) ride in the one
        transaction of a single Redis; on a cluster they are written just before the
        transactions, outside them (each write is idempotent, and harmless if a transaction
        then aborts)."""
        engine, ttl, offs = self.engine, self._ttl, batch.offs
        per_group: list[list[bytes]] = [[] for _ in groups]
        group_of_part = {p: g for g, (_, parts) in enumerate(groups) for p in parts}
        group_of = self._entity_groups(batch, groups)
        loose: list[tuple[bytes, ...]] = []
        for p in batch.spans:
            mine = np.flatnonzero(~result.replayed & (batch.parts == p))
            if not len(mine):
                continue
            mark = int(offs[mine].max())
            key = self.replay_key(batch.source, p).encode()
            per_group[group_of_part[p]] += [
                _command(b"SET", self.offset_key(batch.source, p).encode(), b"%d" % mark, b"PX", ttl),
                _command(b"ZADD", key, b"%d" % mark, self._results(mine, offs, result)),
                _command(b"ZREMRANGEBYSCORE", key, b"-inf", b"(%d" % (mark - self.replay_retention)),
                _command(b"PEXPIRE", key, ttl),
            ]
        loose.append((b"SET", self.definition_key().encode(), self._definition, b"PX", ttl))

        # The latest features of each changed entity: those of its last event when that one is
        # its newest (the usual case), else computed from the state at its newest event time.
        applied = np.flatnonzero(result.applied)
        if applied.size:  # the aggregates' warm-up starts at the first event applied (LT: the minimum)
            first = float(batch.times[applied].min())
            loose += [
                (b"ZADD", self._since, b"LT", repr(first).encode(), SINCE_MEMBER),
                (b"PEXPIRE", self._since, ttl),
            ]
        last = np.full(len(batch.entities), -1, dtype=np.int64)
        np.maximum.at(last, batch.rows[applied], applied)
        changed = np.flatnonzero(last >= 0)
        latest = result.features[last[changed]]
        stale = batch.times[last[changed]] != states[changed, 0]
        if stale.any():
            latest[stale] = engine.latest(states[changed[stale]])
        as_of = np.datetime_as_string(
            np.floor(states[changed, 0] * 1000).astype(np.int64).astype("datetime64[ms]"), unit="ms"
        )
        # Everything numeric is packed for all changed entities at once, then sliced.
        width = 8 * len(self.names)
        packed_latest = latest.astype("<f8").tobytes()
        now_s = self.clock()
        now, now_ms = _wall_time(now_s).encode(), int(now_s * 1000)
        ttl_all = np.array([-1 if t is None else t for t in read.ttl_at], dtype=np.int64)
        ttl_at = ttl_all[changed]
        expire = (ttl_at < 0) | (now_ms - ttl_at > self.ttl_ms // 8)
        ttl_all[changed] = np.where(expire, now_ms, ttl_at)
        stamps = ttl_all[changed].astype("<i8").tobytes()
        names, cat_names, prefix = self.names, engine.pt_categorical, engine.prefix
        cat_at = [names.index(c) for c in cat_names]
        cats_of = [newest[e] for e in changed.tolist()]
        packed_states = engine.encode_many(states[changed], cats_of)
        events_of = [b"%d" % e for e in states[changed, 1].astype(np.int64).tolist()]
        as_of_z = [b"%sZ" % a for a in as_of.astype("S23").tolist()]
        keys = batch.keys
        tail = b"$10\r\nupdated_at\r\n$%d\r\n%s\r\n" % (len(now), now)
        for j, (e, row, cats) in enumerate(zip(changed.tolist(), latest.tolist(), cats_of, strict=True)):
            for c, value in zip(cat_at, cats, strict=True):
                row[c] = value
            record = orjson.dumps(dict(zip(names, row, strict=True)))
            state = stamps[8 * j : 8 * j + 8] + packed_states[j]
            key, stamp, count = keys[e], as_of_z[j], events_of[j]
            per_group[group_of[e]].append(
                _HSET
                % (
                    len(key),
                    key,
                    len(state),
                    state,
                    len(prefix) + width,
                    prefix,
                    packed_latest[j * width : (j + 1) * width],
                    len(record),
                    record,
                    len(stamp),
                    stamp,
                    tail,
                    len(count),
                    count,
                )
            )
        homes = batch.home.tolist()
        for e in changed[expire].tolist():  # new entities, and those whose TTL is renewed
            per_group[group_of[e]].append(_command(b"PEXPIRE", keys[e], ttl))
            where = self.where_key(batch.entities[e]).encode()
            loose.append((b"SET", where, b"%d" % homes[e], b"PX", ttl))
        if self._cluster:
            pipe = self.r.pipeline(transaction=False)
            for args in loose:
                pipe.execute_command(args[0].decode(), *args[1:])  # a name the cluster client can route
            pipe.execute()
        else:
            per_group[0] += [_command(*args) for args in loose]
        aborted = False
        for done in _transactions(conns, per_group):
            if done is None:
                aborted = True  # a watermark moved: that group wrote nothing
                continue
            errors = [r for r in done if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        return None if aborted else ttl_all

    # -- reads -----------------------------------------------------------------------------------

    def get_online_features(
        self, entity_ids: Sequence[str], feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        """Latest features (as of each entity's newest event) in one round trip: float64
        [entities, features]; NaN for unknown entities, categorical and undefined features."""
        names = list(self.names if feature_names is None else feature_names)
        index = {name: j for j, name in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise KeyError(f"not features of view {self.view.name!r}: {', '.join(unknown)}")
        unique = list(dict.fromkeys(entity_ids))
        if not unique:
            return np.zeros((0, len(names)))
        # Two round trips: where each entity's hash is (its partition), then the hashes.
        where = self._fetch([(b"GET", self.where_key(e).encode()) for e in unique])
        found = [i for i, w in enumerate(where) if w is not None]
        got = self._fetch(
            [(b"HGET", self.entity_key(unique[i], int(where[i])).encode(), b"latest") for i in found]
        )
        heads: list[bytes | None] = [None] * len(unique)
        for i, h in zip(found, got, strict=True):
            heads[i] = h
        prefix, size = self.engine.prefix, self._latest_size
        ok = [h is not None and len(h) == size and h.startswith(prefix) for h in heads]
        blank = bytes(size)
        raw = b"".join(h if good and h is not None else blank for h, good in zip(heads, ok, strict=True))
        table = np.frombuffer(raw, dtype=np.uint8).reshape(len(unique), size)[:, len(prefix) :]
        matrix = table.copy().view("<f8").astype(np.float64)
        matrix[~np.asarray(ok, dtype=bool)] = np.nan
        if len(unique) < len(entity_ids):
            position = {e: i for i, e in enumerate(unique)}
            matrix = matrix[[position[e] for e in entity_ids]]
        if feature_names is not None:
            matrix = matrix[:, [index[n] for n in names]]
        return matrix

    def _fetch(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
        """Commands of any keys, their replies in order: one round trip on a single Redis, one per
        node (redis-py's cluster pipeline) on a cluster."""
        if not commands:
            return []
        if isinstance(self.r, RedisCluster):
            pipe = self.r.pipeline(transaction=False)
            for args in commands:
                pipe.execute_command(args[0].decode(), *args[1:])  # a name the cluster client can route
            return list(pipe.execute())
        with self._session() as conn:
            return _roundtrip(conn, [_command(*args) for args in commands])

    def describe(self, entity_id: str) -> EntityFeatures | None:
        """Every feature of one entity, the event time it is as of and when it was written."""
        partition = self.locate(entity_id)
        if partition is None:
            return None
        raw = self.r.hmget(
            self.entity_key(entity_id, partition), ["features", "as_of", "updated_at", "events"]
        )
        features, as_of, updated_at, events = cast(list[bytes | None], raw)
        if features is None or as_of is None or updated_at is None:
            return None
        values = orjson.loads(features)
        return EntityFeatures(
            view=self.view.name,
            entity_id=entity_id,
            as_of=datetime.fromisoformat(as_of.decode()).astimezone(UTC),
            updated_at=datetime.fromisoformat(updated_at.decode()).astimezone(UTC),
            events=int(events or 0),
            values={name: values.get(name) for name in self.names},
        )
