"""One `AlertPolicy` shared by every worker, kept in Redis: one drift, one alert, however many workers.

Each worker sees only some partitions, so its own policy would not know that another worker
already alerted on a feature: merged windows close on whichever worker gets there first, and
every worker's ADWIN can cut on the same change. `SharedAlertPolicy.decide` therefore runs the
policy on its state as stored in Redis (one JSON string, ``key``) and writes it back with
optimistic locking (``WATCH`` / ``MULTI`` / ``EXEC``, retried when another worker wrote
meanwhile), so cooldowns, hysteresis and the emitted alert ids are global.

With ``history_key`` every emitted alert's JSON is also pushed onto that Redis list (newest
first, capped at ``history_size``) in the same ``MULTI`` as the state, so readers such as the HTTP
API see recent alerts without reading Kafka; the worker and the outcome joiner use the version's
``{<ns>:drift:<m>:<v>}:~alerts``. Every key of one transaction (``key``, ``history_key``,
``incidents_key`` and what ``record`` writes) must share a hash tag, as `driftline.redis_keys`
lays them out: a Redis Cluster runs a transaction on one slot only.

Decisions are rare (a window closing, an ADWIN cut), so the round trips cost nothing on the hot
path: a call without signals or window statistics does not touch Redis. The state is saved
*before* the worker publishes the alerts. ``decide(..., record=...)`` queues the caller's own
writes in the same ``MULTI``: the worker stores each merged window's decided alerts in its closing
marker, and the other alerts (ADWIN's) in an outbox
(`detectors.window_store.WindowStore.record_decision`), until they are published. A worker that
dies before publishing them leaves them to be published as they are by whoever takes them over -
the policy is not asked again, so it neither counts them twice nor drops them as already emitted
before they ever were.

With ``incidents`` (a factory of `detectors.incidents.IncidentBook`) the version's incident book
lives in the same JSON as the policy (``{"policy": ..., "incidents": ...}``), so it is decided in
the same transaction: ``decide`` returns the policy's alerts followed by the book's
`IncidentEvent` s, and ``record`` stores both. Each event's incident snapshot is also written to
the hash ``incidents_key`` (``{<ns>:drift:<m>:<v>}:~incidents``: incident id -> latest `DriftIncident` JSON,
evidence attached since its last event included) for the HTTP API. `supersede` resolves the open
incident when another version takes over production.

>>> shared = SharedAlertPolicy(redis.Redis(port=1), "{dl:drift:fraud:3}:~policy")  # never connects here:
>>> shared.decide([], model="fraud", version=3)  # nothing to decide, so no round trip
[]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster

from detectors.alerts import AlertPolicy
from detectors.incidents import DriftOutput, IncidentBook, IncidentEvent
from detectors.signals import DriftSignal, WindowStat

_MAX_ATTEMPTS = 50
_T = TypeVar("_T")


class SharedAlertPolicy:
    """`AlertPolicy.decide` on a policy state shared through Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        key: str,
        make: Callable[[], AlertPolicy] = AlertPolicy,
        ttl_seconds: int = 30 * 86_400,
        history_key: str | None = None,
        history_size: int = 1000,
        incidents: Callable[[], IncidentBook] | None = None,
        incidents_key: str | None = None,
    ) -> None:
        self.r = client
        self.key = key
        self.make = make
        self.ttl_seconds = ttl_seconds
        self.history_key = history_key
        self.history_size = history_size
        self.incidents = incidents
        self.incidents_key = incidents_key
        self._kept: Any = None
        self.last_book: IncidentBook | None = None
        """The incident book as of this instance's latest decision."""

    def load(self) -> AlertPolicy:
        """The policy as stored (a fresh one from ``make`` if none is)."""
        return self._load(self.r.get(self.key))[0]

    def book(self) -> IncidentBook | None:
        """The incident book as stored (None without ``incidents``)."""
        return self._load(self.r.get(self.key))[1]

    def _load(self, raw: object) -> tuple[AlertPolicy, IncidentBook | None]:
        if raw is None:
            self._kept = None
            return self.make(), None if self.incidents is None else self.incidents()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        doc = json.loads(text)
        if "policy" not in doc:
            doc = {"policy": doc}  # stored before incidents existed
        saved = doc.get("incidents")
        self._kept = saved  # written back as it was by an instance without a book
        book: IncidentBook | None = None
        if self.incidents is not None:
            book = self.incidents() if saved is None else IncidentBook.from_state(saved)
        return AlertPolicy.from_state(doc["policy"]), book

    def _save(self, pipe: Any, policy: AlertPolicy, book: IncidentBook | None) -> None:
        doc: dict[str, Any] = {"policy": policy.state()}
        if book is not None:
            doc["incidents"] = book.state()
        elif self._kept is not None:
            doc["incidents"] = self._kept
        pipe.set(self.key, json.dumps(doc, separators=(",", ":")), ex=self.ttl_seconds)
        if self.incidents_key is not None and book is not None and book.changed:
            latest = {inc.id: inc.model_dump_json() for inc in book.changed}  # the last one per id wins
            pipe.hset(self.incidents_key, mapping=latest)

    def decide(
        self,
        signals: Sequence[DriftSignal],
        *,
        model: str,
        version: int,
        windows: Iterable[WindowStat] = (),
        record: Callable[[Any, list[DriftOutput]], None] | None = None,
    ) -> list[DriftOutput]:
        """The alerts (and incident events) to publish; the shared state is updated atomically
        with the decision.

        ``record(pipe, outputs)`` may queue more writes in the same ``MULTI`` (called once per
        attempt, with that attempt's outputs).
        """
        stats = list(windows)
        if not signals and not stats:
            return []

        def change(pipe: Any, policy: AlertPolicy, book: IncidentBook | None) -> list[DriftOutput]:
            alerts = policy.decide(signals, model=model, version=version, windows=stats)
            events = (
                [] if book is None else book.observe(signals, model=model, version=version, windows=stats)
            )
            pipe.multi()
            self._save(pipe, policy, book)
            if self.history_key is not None and alerts:
                pipe.lpush(self.history_key, *[a.model_dump_json() for a in alerts])
                pipe.ltrim(self.history_key, 0, self.history_size - 1)
            outputs: list[DriftOutput] = [*alerts, *events]
            if record is not None:
                record(pipe, outputs)
            return outputs

        return self._transact(change, "deciding alerts")

    def supersede(
        self, new_version: int, record: Callable[[Any, list[DriftOutput]], None] | None = None
    ) -> list[IncidentEvent]:
        """Version `new_version` took over production: resolve this version's open incident, once.

        ``record(pipe, events)`` stores the events (in the new version's outbox) just before the
        transaction that saves the resolution, on a pipeline of its own (see the code)."""
        if self.incidents is None:
            return []

        def change(pipe: Any, policy: AlertPolicy, book: IncidentBook | None) -> list[IncidentEvent] | None:
            if book is None or book.open is None:
                return None  # nothing open: nothing to write
            events = book.supersede(new_version)
            if record is not None:
                # Before the MULTI and outside it: `record` writes the new version's keys,
                # another hash slot than this version's on a Redis Cluster. An attempt
                # that then aborts leaves its record; the retry writes the same event ids
                # (incident id and revision), so at worst one is published twice.
                side = self.r.pipeline(transaction=False)
                record(side, list(events))
                side.execute()
            pipe.multi()
            self._save(pipe, policy, book)
            return events

        return self._transact(change, "resolving incidents") or []

    def _transact(self, change: Callable[[Any, AlertPolicy, IncidentBook | None], _T], what: str) -> _T:
        """``change(pipe, policy, book)`` on the saved state, in one optimistic transaction: the
        key is watched and loaded, `change` queues its writes after ``pipe.multi()`` (or returns
        None having queued nothing), and the whole is retried when another worker wrote first."""
        for _ in range(_MAX_ATTEMPTS):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.key)
                    policy, book = self._load(pipe.get(self.key))
                    result = change(pipe, policy, book)
                    if result is None:
                        pipe.unwatch()
                        return result
                    pipe.execute()
                    self.last_book = book
                    return result
                except redis.WatchError:
                    continue  # another worker decided meanwhile: decide again on its state
        raise RuntimeError(f"gave up {what} on {self.key}: other workers kept changing it")
