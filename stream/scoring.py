"""Scoring a batch with the current deployment: production, a sticky canary share, a shadow.

A ``Scorer`` is an immutable snapshot of one deployment with its loaded ONNX sessions; the
worker swaps whole snapshots between batches, so a batch is never scored by a half-updated
deployment. ``ModelFollower`` builds new snapshots in a background thread when
``<prefix>.models`` says the deployment changed (and re-checks the registry periodically).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from confluent_kafka import Consumer
from prometheus_client import Gauge

from inference.encoding import encode_features
from inference.metadata import Deployment, ModelVersion
from inference.routing import route
from inference.session import ModelSession
from stream.dependency import Dependency, Name, outage_of
from stream.offsets import end_offsets
from stream.predictions import Arm

log = logging.getLogger("driftline.scoring")

Columns = Mapping[str, Sequence[Any] | np.ndarray]


class DeploymentSource(Protocol):
    """What the follower needs of the model registry."""

    def deployment(self, name: str) -> Deployment: ...

    def generation(self, name: str) -> int: ...

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, ModelSession]: ...


@dataclass(frozen=True)
class ScoredArm:
    meta: ModelVersion
    arm: Arm
    rows: np.ndarray  # indices into the batch
    scores: np.ndarray
    inference_s: float


def _signature(d: Deployment) -> tuple[str | None, str | None, float, str | None]:
    return (
        d.production.ref if d.production else None,
        d.canary.ref if d.canary else None,
        d.canary_fraction if d.canary else 0.0,
        d.shadow.ref if d.shadow else None,
    )


@dataclass(frozen=True)
class Scorer:
    deployment: Deployment
    sessions: Mapping[str, ModelSession]  # by model ref "name:version"
    # Versions with the same feature encoding share one input matrix per batch; the encoding of
    # a version never changes, so its key is computed once per snapshot, not once per batch.
    encoding_keys: Mapping[str, tuple[str, ...]] = field(init=False)

    def __post_init__(self) -> None:
        keys = {
            # A version's view is part of its encoding: the same specs over another view's
            # features are other inputs.
            meta.ref: (
                meta.inputs.view.fingerprint if meta.inputs else "",
                *(f.model_dump_json() for f in meta.features),
            )
            for meta, _ in self.versions()
        }
        object.__setattr__(self, "encoding_keys", keys)

    @property
    def signature(self) -> tuple[str | None, str | None, float, str | None]:
        return _signature(self.deployment)

    def versions(self) -> list[tuple[ModelVersion, str]]:
        d = self.deployment
        arms: list[tuple[ModelVersion | None, str]] = [
            (d.production, "production"),
            (d.canary, "canary"),
            (d.shadow, "shadow"),
        ]
        return [(meta, stage) for meta, stage in arms if meta is not None]

    def feature_names(self) -> list[str]:
        names: dict[str, None] = {}
        for meta, _ in self.versions():
            names.update((f.name, None) for f in meta.features)
        return list(names)

    def score(
        self, entity_ids: Sequence[str], columns: Columns, per_version: Mapping[str, Columns] | None = None
    ) -> list[ScoredArm]:
        """One ONNX call per model version over the rows routed to it. `per_version`: the columns
        of versions whose feature view differs from production's, by ref (default `columns`)."""
        n = len(entity_ids)
        d = self.deployment
        assert d.production is not None, "a Scorer always has a production version"
        arm_of = route(d, entity_ids) if d.canary else np.zeros(n, dtype=np.int8)
        plan: list[tuple[ModelVersion, Arm, np.ndarray]] = [
            (d.production, "production", np.flatnonzero(arm_of == 0))
        ]
        if d.canary is not None:
            plan.append((d.canary, "canary", np.flatnonzero(arm_of == 1)))
        if d.shadow is not None:
            plan.append((d.shadow, "shadow", np.arange(n)))
        encoded: dict[tuple[str, ...], np.ndarray] = {}  # versions sharing features share a matrix
        out = []
        for meta, arm, rows in plan:
            if len(rows) == 0:
                continue
            key = self.encoding_keys[meta.ref]
            if key not in encoded:
                own = (per_version or {}).get(meta.ref, columns)
                encoded[key] = encode_features(meta.features, own, n)
            started = time.perf_counter()
            scores = self.sessions[meta.ref].predict(encoded[key][rows])
            out.append(ScoredArm(meta, arm, rows, scores, time.perf_counter() - started))
        return out


class ModelFollower:
    """Watches ``<prefix>.models`` and the registry; hands the worker new ``Scorer`` snapshots."""

    def __init__(
        self,
        registry: DeploymentSource,
        model: str,
        consumer_config: dict[str, Any],
        models_topic: str,
        poll_interval: float = 10.0,
        missing_gauge: Gauge | None = None,
    ) -> None:
        self.registry = registry
        self.model = model
        self.consumer_config = consumer_config
        self.models_topic = models_topic
        self.poll_interval = poll_interval
        self._pending: Scorer | None = None
        self._current_signature: tuple[str | None, str | None, float, str | None] | None = None
        self._generation = -1  # the registry's change counter when we last read the deployment
        self._sessions: dict[str, ModelSession] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        # The registry lost the production metadata we serve (Redis flushed or evicted): 1 on
        # `missing_gauge`, one log line per change; the loaded deployment keeps serving.
        self.metadata_missing = False
        self.missing_gauge = missing_gauge
        if missing_gauge is not None:
            missing_gauge.labels(model).set(0)
        self.last_poll = time.monotonic()  # the last successful read of the registry
        self.deps: dict[Name, Dependency] = {}

    def track(self, age: Gauge, deps: dict[Name, Dependency]) -> None:
        """Export the time since the last successful poll on `age`; report outages to `deps`."""
        age.set_function(lambda: time.monotonic() - self.last_poll)
        self.deps = deps

    def _failed(self, exc: BaseException) -> None:
        """One line per outage (via its `Dependency`) or per distinct error, not one per poll."""
        name = outage_of(exc)
        if name is not None and name in self.deps:
            self.deps[name].down(exc)
            return
        error = f"{type(exc).__name__}: {exc}"
        if error != self.last_error:
            log.error("cannot load deployment of %s: %s", self.model, error)
        self.last_error = error

    def _succeeded(self) -> None:
        self.last_poll = time.monotonic()
        self.last_error = None
        dep = self.deps.get("redis")
        if dep is not None:
            dep.recovered()

    def build(self) -> Scorer | None:
        """Snapshot the registry's current deployment (None: no production version yet)."""
        d = self.registry.deployment(self.model)
        if d.production is None:
            return None
        sessions: dict[str, ModelSession] = {}
        for meta in (d.production, d.canary, d.shadow):
            if meta is not None:
                # Loaded versions are reused; a new one is fetched and its sha256 verified.
                sessions[meta.ref] = (
                    self._sessions.get(meta.ref) or self.registry.load(meta.name, meta.version)[1]
                )
        self._sessions = sessions
        return Scorer(d, sessions)

    def refresh(self) -> None:
        try:
            generation = self.registry.generation(self.model)  # one cheap read per poll
            if generation == self._generation:
                return
            d = self.registry.deployment(self.model)
            serving = self._current_signature is not None and self._current_signature[0] is not None
            self._production_missing(serving and d.production is None)
            scorer = None
            if d.production is not None and _signature(d) != self._current_signature:
                scorer = self.build()
        except Exception as exc:  # keep serving the current deployment; say why, retry next poll
            self._failed(exc)
            return
        self._succeeded()
        self._generation = generation
        if scorer is not None:
            with self._lock:
                self._pending = scorer
                self._current_signature = scorer.signature

    def _production_missing(self, missing: bool) -> None:
        if missing == self.metadata_missing:
            return
        self.metadata_missing = missing
        if self.missing_gauge is not None:
            self.missing_gauge.labels(self.model).set(int(missing))
        serving = self._current_signature[0] if self._current_signature else None
        if missing:
            log.error(
                "the registry has no production version of %r any more (Redis flushed, evicted or "
                "restored from an old snapshot?); still serving %s: run `driftline models restore`",
                self.model,
                serving,
            )
        else:
            log.info("the registry has the production version of %r again", self.model)

    def take(self) -> Scorer | None:
        """The newest snapshot not yet taken, if any (called by the worker between batches)."""
        with self._lock:
            scorer, self._pending = self._pending, None
            return scorer

    def mark_current(self, scorer: Scorer) -> None:
        self._current_signature = scorer.signature

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        """Follow until stopped: any Kafka or Redis error is retried with backoff, never fatal."""
        backoff = Dependency("kafka", "", initial_delay=0.5, max_delay=10.0)  # delays only
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(backoff.next_delay())

    def _follow(self) -> None:
        consumer = Consumer(
            {
                **self.consumer_config,
                "group.id": f"driftline-follower-{id(self)}",
                "enable.auto.commit": False,
            }
        )
        try:
            try:
                # Only changes from now on matter: the current state was read from the registry.
                consumer.assign(end_offsets(consumer, self.models_topic))
                following = True
            except LookupError:
                following = False  # no models topic: poll the registry only
            last_check = time.monotonic()
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=100, timeout=0.2) if following else []
                # Consumer errors (a broker away) are librdkafka's to retry; polls go on.
                relevant = any(_is_about(m.value(), self.model) for m in msgs if m.error() is None)
                if relevant or time.monotonic() - last_check > self.poll_interval:
                    self.refresh()
                    last_check = time.monotonic()
                if not following:
                    self._stop.wait(0.5)
        finally:
            consumer.close()


def _is_about(value: bytes | None, model: str) -> bool:
    try:
        return bool(value) and orjson.loads(value or b"{}").get("name") == model
    except orjson.JSONDecodeError:
        return False


def wait_for_scorer(
    follower: ModelFollower,
    should_stop: Callable[[], bool],
    every: float = 1.0,
    deps: dict[Name, Dependency] | None = None,
) -> Scorer | None:
    """Block until the model has a production version (or the worker is asked to stop); while the
    registry is unreachable, wait for it (saying so once, through its `Dependency`)."""
    announced = False
    deps = deps or {}
    while not should_stop():
        try:
            scorer = follower.build()
        except Exception as exc:
            name = outage_of(exc)
            if name is None or name not in deps:
                raise
            deps[name].down(exc)
            time.sleep(deps[name].next_delay())
            continue
        for dep in deps.values():
            if dep.name == "redis":
                dep.recovered()
        if scorer is not None:
            follower.mark_current(scorer)
            return scorer
        if not announced:
            log.warning(
                "no production version of %r yet; waiting (events stay in Kafka). If Redis lost the "
                "registry, `driftline models restore` brings it back from <prefix>.registry",
                follower.model,
            )
            announced = True
        time.sleep(every)
    return None
