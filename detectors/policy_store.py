"""One `AlertPolicy` shared by every worker, kept in Redis: one drift, one alert, however many workers.

Each worker sees only some partitions, so its own policy would not know that another worker
already alerted on a feature: merged windows close on whichever worker gets there first, and
every worker's ADWIN can cut on the same change. `SharedAlertPolicy.decide` therefore runs the
policy on its state as stored in Redis (one JSON string, ``key``) and writes it back with
optimistic locking (``WATCH`` / ``MULTI`` / ``EXEC``, retried when another worker wrote
meanwhile), so cooldowns, hysteresis and the emitted alert ids are global.

With ``history_key`` every emitted alert's JSON is also pushed onto that Redis list (newest
first, capped at ``history_size``) in the same ``MULTI`` as the state, so readers such as the HTTP
API see recent alerts without reading Kafka; the worker and the outcome joiner use
``<ns>:alerts``.

Decisions are rare (a window closing, an ADWIN cut), so the round trips cost nothing on the hot
path: a call without signals or window statistics does not touch Redis. The state is saved
*before* the worker publishes the alerts. ``decide(..., record=...)`` queues the caller's own
writes in the same ``MULTI``: the worker stores each merged window's decided alerts in its closing
marker, and the other alerts (ADWIN's) in an outbox
(`detectors.window_store.WindowStore.record_decision`), until they are published. A worker that
dies before publishing them leaves them to be published as they are by whoever takes them over -
the policy is not asked again, so it neither counts them twice nor drops them as already emitted
before they ever were.

>>> shared = SharedAlertPolicy(redis.Redis(port=1), "dl:drift:fraud:3:~policy")  # never connects here:
>>> shared.decide([], model="fraud", version=3)  # nothing to decide, so no round trip
[]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from detectors.alerts import AlertPolicy, DriftAlert
from detectors.signals import DriftSignal, WindowStat

_MAX_ATTEMPTS = 50


class SharedAlertPolicy:
    """`AlertPolicy.decide` on a policy state shared through Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        make: Callable[[], AlertPolicy] = AlertPolicy,
        ttl_seconds: int = 30 * 86_400,
        history_key: str | None = None,
        history_size: int = 1000,
    ) -> None:
        self.r = client
        self.key = key
        self.make = make
        self.ttl_seconds = ttl_seconds
        self.history_key = history_key
        self.history_size = history_size

    def load(self) -> AlertPolicy:
        """The policy as stored (a fresh one from ``make`` if none is)."""
        raw = self.r.get(self.key)
        return self._policy(raw)

    def _policy(self, raw: object) -> AlertPolicy:
        if raw is None:
            return self.make()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return AlertPolicy.from_state(json.loads(text))

    def decide(
        self,
        signals: Sequence[DriftSignal],
        *,
        model: str,
        version: int,
        windows: Iterable[WindowStat] = (),
        record: Callable[[Any, list[DriftAlert]], None] | None = None,
    ) -> list[DriftAlert]:
        """The alerts to publish; the shared state is updated atomically with the decision.

        ``record(pipe, alerts)`` may queue more writes in the same ``MULTI`` (called once per
        attempt, with that attempt's alerts).
        """
        stats = list(windows)
        if not signals and not stats:
            return []
        for _ in range(_MAX_ATTEMPTS):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.key)
                    policy = self._policy(pipe.get(self.key))
                    alerts = policy.decide(signals, model=model, version=version, windows=stats)
                    pipe.multi()
                    pipe.set(self.key, json.dumps(policy.state(), separators=(",", ":")), ex=self.ttl_seconds)
                    if self.history_key is not None and alerts:
                        pipe.lpush(self.history_key, *[a.model_dump_json() for a in alerts])
                        pipe.ltrim(self.history_key, 0, self.history_size - 1)
                    if record is not None:
                        record(pipe, alerts)
                    pipe.execute()
                    return alerts
                except redis.WatchError:
                    continue  # another worker decided meanwhile: decide again on its state
        raise RuntimeError(f"gave up deciding alerts on {self.key}: other workers kept changing it")
