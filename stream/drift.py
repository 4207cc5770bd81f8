"""Drift monitoring inside the worker: each scored batch feeds the production version's detectors.

Per production model version (a promotion starts fresh detectors on the new version's reference
distributions, so the switch itself raises no alert):

* **Windowed detectors** - PSI, KS and the missing rate of every monitored feature and of the
  score - run on event-time windows merged across workers in Redis
  (`detectors.window_store.WindowStore`): a window holds the same events whichever worker consumed
  them, is decided exactly once and published at least once (a worker killed before publishing a
  window's alerts leaves it to another worker: `WindowStore` has the protocol; the worker calls
  `DriftStage.published` after each commit and `DriftStage.rewound` when it redoes a batch), and
  its statistics do not depend on the partition assignment. A window also waits for
  `DriftConfig.min_window_events` events, taking the next windows in (a low-rate stream).
* **Windowed aggregates** of a version's view are monitored by the windowed detectors once
  warm (`feature_store.warmup`): a value counts only when its window is fully observed since the
  online store's first event (``<ns>:fs:<view>:since``), as the version's warm references were
  built; warming values are masked out of the windows and out of ADWIN/CUSUM on the score (whose
  warm-up is its inputs' longest). See `DriftStage._aggregates_of` for which ones.
* **ADWIN** on the score (and on each numeric feature with ``MonitorConfig.adwin_features``) runs
  where the partitions are: one detector per partition, so its state moves with the partition.
  Its state and the last offset it was fed are checkpointed to Redis at every commit point
  (`DriftStage.checkpoint`, called by the worker after the batch's outputs are durable and
  before its offsets are committed) and reloaded when a worker first sees the partition: a
  restart or a rebalance neither loses a detector's window nor feeds it a replayed event twice.
* **Alerts and incidents**: every signal goes through one `AlertPolicy` and one
  `detectors.incidents.IncidentBook` per version, shared by all workers
  (`detectors.policy_store.SharedAlertPolicy`), so one drift gives one alert per feature and one
  incident however many workers saw it. The worker publishes the per-signal alerts to
  ``<prefix>.signals`` and the incident lifecycle events to ``<prefix>.alerts`` with the batch's
  other outputs. Every alert carries the Kafka offsets of its window (``window_offsets``: per
  partition, first and last; ADWIN's also its ``partition``). The worker tells the stage what it
  serves (`DriftStage.deployed`, at start and after each swap): open incidents of versions no
  longer served - the old production after a promotion, a canary rolled back - are resolved as
  superseded by the production version.

Redis keys, under ``{<ns>:drift:<model>:<version>}`` (one hash tag per version, so the policy's
transaction can span them on a Redis Cluster: `detectors.window_store.drift_prefix`; besides
`WindowStore`'s; the whole layout: `driftline.redis_keys`):
``~adwin:<p>`` the ADWIN checkpoint of partition ``p`` (JSON), ``~policy`` the shared policy state
(JSON), ``~bins``, a hash per monitored input (aggregates included) of its latest closed window as
PSI binned it (bin labels, reference proportions, the window's counts and span: the report draws
both distributions from it); ``~latest``, a hash of the latest statistic per detector and feature (field
``<detector>:<feature>``, value the `WindowStat` JSON: statistic, threshold, p-value, window end,
n), written by a batch that closed windows, for readers such as the HTTP API; ``~history``, the
list of every closed window's `WindowStat` (oldest first, the last 20,000), for reports; all expire
``ttl_seconds`` after their last write. ``~alerts`` (`alerts_key`) is the list of the version's
recent alerts, newest first, capped at 1,000 (`SharedAlertPolicy`'s ``history_key``); ``~incidents``
(`incidents_key`) the hash of the version's incidents' latest state (incident id ->
`DriftIncident` JSON). Readers of every version: `recent_alerts`, `all_incidents`.

>>> DriftConfig(window_seconds=60).window_seconds
60.0
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.cluster import RedisCluster

from detectors.adwin import AdwinDetector
from detectors.alerts import AlertPolicy, DriftAlert
from detectors.cusum import CusumDetector, CusumJob, update_many
from detectors.incidents import DriftIncident, DriftOutput, IncidentBook, IncidentConfig, IncidentEvent
from detectors.monitor import MonitorConfig
from detectors.policy_store import SharedAlertPolicy
from detectors.reference import Reference
from detectors.signals import SCORE_FEATURE, DriftSignal, WindowStat
from detectors.window_store import WINDOWED_DETECTORS, WindowStore, drift_prefix, fault_point
from feature_store.definitions import FeatureView
from feature_store.online import OnlineStore
from feature_store.warmup import LiveWarmup, tile_seconds, warmup_seconds
from inference.encoding import numeric_values
from inference.metadata import Deployment, Distribution, ModelVersion
from inference.views import view_from_record
from stream.outputs import Output
from stream.topics import Topics

OTHER_CATEGORY = "__other__"  # training's catch-all share of rare categories
HISTORY_WINDOWS = 20_000  # closed-window statistics kept per version for reports


def latest_key(namespace: str, model: str, version: int) -> str:
    """The hash of a version's latest statistics (see the module docstring)."""
    return f"{drift_prefix(namespace, model, version)}:~latest"


def history_key(namespace: str, model: str, version: int) -> str:
    """The list of a version's closed-window statistics (see the module docstring)."""
    return f"{drift_prefix(namespace, model, version)}:~history"


def bins_key(namespace: str, model: str, version: int) -> str:
    """The hash of each feature's latest closed window as PSI binned it (see the module docstring)."""
    return f"{drift_prefix(namespace, model, version)}:~bins"


def alerts_key(namespace: str, model: str, version: int) -> str:
    """The list of a version's recent alerts, newest first (capped at 1,000)."""
    return f"{drift_prefix(namespace, model, version)}:~alerts"


def incidents_key(namespace: str, model: str, version: int) -> str:
    """The hash of the latest state of every incident of a version (id -> `DriftIncident` JSON)."""
    return f"{drift_prefix(namespace, model, version)}:~incidents"


def policy_key(namespace: str, model: str, version: int) -> str:
    """The shared alert policy and incident book of a version (`SharedAlertPolicy`)."""
    return f"{drift_prefix(namespace, model, version)}:~policy"


def versions_key(namespace: str, model: str) -> str:
    """The set of a model's versions with drift state (used alone: no hash tag)."""
    return f"{namespace}:drift:{model}:~versions"


def recent_alerts(
    client: redis.Redis | RedisCluster, namespace: str, versions: Iterable[tuple[str, int]]
) -> list[bytes]:
    """The raw alerts of every version in `versions` (model, version), newest first (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for model, version in versions:
        pipe.lrange(alerts_key(namespace, model, version), 0, -1)
    raws = [(i, raw) for lists in pipe.execute() for i, raw in enumerate(lists)]
    # Each list is newest first; merged by the alerts' own time (newest first).
    return [raw for _, raw in sorted(raws, key=lambda ir: _alert_ts(ir[1]), reverse=True)]


def _alert_ts(raw: bytes | str) -> float:
    try:
        return float(DriftAlert.model_validate_json(raw).ts.timestamp())
    except ValidationError:
        return float("-inf")


def all_incidents(
    client: redis.Redis | RedisCluster, namespace: str, versions: Iterable[tuple[str, int]]
) -> list[bytes]:
    """The raw latest state of every incident of the versions in `versions` (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for model, version in versions:
        pipe.hvals(incidents_key(namespace, model, version))
    return [raw for values in pipe.execute() for raw in values]


def drift_outputs(topics: Topics, decided: Iterable[DriftOutput]) -> list[Output]:
    """Kafka records of decided outputs: incident events to ``<prefix>.alerts`` keyed by incident id
    (a compacted view keeps each incident's latest state), per-signal alerts to ``<prefix>.signals``."""
    out = []
    for d in decided:
        if isinstance(d, IncidentEvent):
            out.append(Output(topics.alerts, d.incident_id.encode(), d.model_dump_json().encode()))
        else:
            out.append(
                Output(topics.signals, f"{d.model}:{d.feature}".encode(), d.model_dump_json().encode())
            )
    return out


def to_reference(d: Distribution) -> Reference:
    """inference's reference distribution -> the detectors' input model."""
    return Reference(
        kind=d.kind,
        sample=list(d.sample),
        frequencies=dict(d.frequencies),
        missing_rate=d.missing_rate,
        count=d.count,
        other_category=OTHER_CATEGORY if d.kind == "categorical" else None,
    )


def _warm_aggregates(meta: ModelVersion, view: FeatureView) -> dict[str, float]:
    """The aggregates of `view` that `meta` has warm references of, with their warm-up length."""
    aggregates = warmup_seconds(view)
    return {
        name: d.warmup_seconds
        for name, d in meta.reference.items()
        if name in aggregates and d.warmup_seconds is not None
    }


def boolean_categories(values: Sequence[Any]) -> np.ndarray:
    """Boolean inputs (True/False, or the feature store's 1.0/0.0) as the categories of their
    reference, ``"true"``/``"false"``; missing stays None.

    >>> boolean_categories([True, 0.0, None, float("nan")]).tolist()
    ['true', 'false', None, None]
    """
    numbers = numeric_values(values, len(values))
    out = np.full(len(values), None, dtype=object)
    out[numbers == 1.0] = "true"
    out[numbers == 0.0] = "false"
    return out


@dataclass(frozen=True)
class Unscored:
    """Events the production version's input contract dead-lettered (`stream.input_gate`).

    Not scored, but each counts in the drift windows as an event whose offending inputs are
    missing (and for nothing else: not for the score, its other inputs or ADWIN/CUSUM), so the
    missing-rate detector sees an upstream change to a wrong type under the default policy too.
    They are added with the batch's scored events, so a replayed batch skips them alike.
    """

    ts: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    missing: Sequence[Collection[str]]  # per event, the inputs that count as missing

    def __len__(self) -> int:
        return len(self.missing)


NO_UNSCORED = Unscored(np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), ())


class DriftConfig(BaseModel):
    """How the worker's detectors window, sample and alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_seconds: float = Field(300.0, gt=0)
    """Tumbling event-time windows, aligned to the epoch, merged across workers."""
    allowed_lateness: float = Field(30.0, ge=0)
    """A window closes when every partition's event time passed its end by this much."""
    idle_timeout_seconds: float | None = 30.0
    """Partitions without a batch for this long (wall clock) do not hold windows open."""
    ks_sample_rate: float = Field(0.05, ge=0, le=1)
    ks_sample_size: int = Field(2000, ge=2)
    cooldown_seconds: float = Field(3600.0, ge=0)
    ttl_seconds: int = Field(86_400, ge=60)
    close_timeout_seconds: float = Field(60.0, gt=0)
    """A merged window claimed but not published this long ago is taken over by another worker."""
    min_window_events: int = Field(500, ge=0)
    """A window closes on event time *and* this many events: one with fewer takes the next
    windows in until it has them (0 or 1: close on event time alone). See `WindowStore`."""
    monitor: MonitorConfig = MonitorConfig()
    """Thresholds, significance levels and which ADWINs run (``window_*`` fields are unused here)."""
    incidents: IncidentConfig = IncidentConfig()
    """When incidents open, update and resolve (its ``window_seconds`` is taken from ``window_seconds``)."""

    def incident_book(self) -> IncidentBook:
        return IncidentBook(self.incidents.model_copy(update={"window_seconds": self.window_seconds}))

    warmup_refresh_seconds: float = Field(60.0, ge=0)
    """How often (wall clock) the online store's warm-up start is read again once known."""


def incident_events_counter(registry: CollectorRegistry) -> Counter:
    """``driftline_incident_events_total{model,kind}``: the workers' and the outcome joiner's."""
    return Counter(
        "driftline_incident_events",
        "Incident lifecycle events published, by kind (opened, updated, resolved)",
        ["model", "kind"],
        registry=registry,
    )


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: Sequence[str] = ("model", "version", "feature")) -> Gauge:
            return Gauge(name, doc, list(labels), registry=registry)

        self.alerts = Counter(
            "driftline_drift_alerts", "Drift alerts by severity and detector", ["severity", "detector"],
            registry=registry,
        )  # fmt: skip
        self.statistic = gauge(
            "driftline_drift_statistic",
            "Latest closed-window statistic per detector and feature",
            ("model", "version", "detector", "feature"),
        )
        self.psi = gauge("driftline_psi", "PSI of the latest closed window")
        self.ks = gauge("driftline_ks_statistic", "KS D of the latest closed window")
        self.ks_p = gauge("driftline_ks_pvalue", "KS p-value of the latest closed window")
        self.missing = gauge("driftline_missing_rate", "Missing-value rate of the latest closed window")
        per_partition = ("model", "version", "feature", "partition")
        self.adwin_width = gauge("driftline_adwin_width", "Values in ADWIN's current window", per_partition)
        self.adwin_estimate = gauge(
            "driftline_adwin_estimate",
            "Mean of ADWIN's current window (of reference ranks for numeric features)",
            per_partition,
        )
        self.cusum = gauge(
            "driftline_cusum_statistic",
            "Largest CUSUM statistic over its rows, as a fraction of its threshold (alarm at 1)",
            per_partition,
        )
        self.windows = Counter(
            "driftline_drift_windows_closed", "Merged drift windows closed by this worker",
            ["model", "version"], registry=registry,
        )  # fmt: skip
        self.incidents_open = Gauge(
            "driftline_incidents_open",
            "Open drift incidents per model version (as of this worker's latest decision)",
            ["model", "version"],
            registry=registry,
        )
        self.incident_events = incident_events_counter(registry)
        self.late = Counter(
            "driftline_drift_late_events",
            "Events dropped by the drift windows: their window had already closed",
            ["model", "version"],
            registry=registry,
        )

    def record(self, model: str, version: str, stats: Iterable[WindowStat]) -> None:
        gauges = {"psi": self.psi, "ks": self.ks, "missing_rate": self.missing}
        for w in stats:
            self.statistic.labels(model, version, w.detector, w.feature).set(w.statistic)
            gauge = gauges.get(w.detector)
            if gauge is not None:
                gauge.labels(model, version, w.feature).set(w.statistic)
            if w.detector == "ks" and w.p_value is not None:
                self.ks_p.labels(model, version, w.feature).set(w.p_value)


@dataclass
class _Adwins:
    """The per-partition detectors (ADWIN, CUSUM) of one partition and the last offset they were fed."""

    detectors: dict[str, AdwinDetector]
    offset: int = -1
    cusums: dict[str, CusumDetector] = field(default_factory=dict)
    # Their gauges' labelled children (`labels()` costs a lookup and a lock per call).
    _gauges: dict[tuple[str, str], Any] = field(default_factory=dict)

    def gauges(self, m: DriftMetrics, model: str, version: str, feature: str, p: int) -> tuple[Any, Any]:
        """The ADWIN width and estimate gauges of `feature` on this partition."""
        key = ("adwin", feature)
        if key not in self._gauges:
            labels = (model, version, feature, str(p))
            self._gauges[key] = (m.adwin_width.labels(*labels), m.adwin_estimate.labels(*labels))
        pair: tuple[Any, Any] = self._gauges[key]
        return pair

    def cusum_gauge(self, m: DriftMetrics, model: str, version: str, feature: str, p: int) -> Any:
        """The CUSUM statistic gauge of `feature` on this partition."""
        key = ("cusum", feature)
        if key not in self._gauges:
            self._gauges[key] = m.cusum.labels(model, version, feature, str(p))
        return self._gauges[key]

    def state(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "detectors": {f: d.state(include_reference=False) for f, d in self.detectors.items()},
            "cusum": {f: d.state(include_reference=False) for f, d in self.cusums.items()},
        }


@dataclass(frozen=True)
class _Rows:
    """`WindowStore.add`'s per-event arguments."""

    columns: Mapping[str, np.ndarray]
    ts: np.ndarray
    parts: np.ndarray
    offs: np.ndarray
    scores: np.ndarray


@dataclass
class _Version:
    """Everything monitored for one production model version."""

    meta: ModelVersion
    store: WindowStore
    policy: SharedAlertPolicy
    adwin_refs: dict[str, Reference]
    numeric: set[str]
    cusum_refs: dict[str, Reference] = field(default_factory=dict)
    cusum_ert: float = 1e8
    partitions: dict[int, _Adwins] = field(default_factory=dict)
    boolean: set[str] = field(default_factory=set)
    dirty: set[int] = field(default_factory=set)


class DriftStage:
    """The worker's drift detectors (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        namespace: str,
        registry: CollectorRegistry,
        config: DriftConfig | None = None,
        monitored: set[str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.r = client
        self.namespace = namespace
        self.config = config or DriftConfig()
        # Which model inputs get detectors (None: all with a reference), for versions that recorded
        # no view. A version with a view: its raw features, the score, and its windowed aggregates
        # with warm references, whose values count only once their window is fully observed
        # (`feature_store.warmup`: else every warm-up of a fresh stream would look like drift).
        self.monitored = monitored
        self.worker_id = worker_id
        self.metrics = DriftMetrics(registry)
        self.partitions: list[int] | None = None
        self._current: _Version | None = None
        self._unpublished: list[DriftOutput] = []  # returned since the last commit
        self._resend: list[DriftOutput] = []  # of a failed attempt, for the batch's redo
        self._superseded: list[DriftOutput] = []  # incidents of versions no longer served, resolved
        self._serving: tuple[str, int, frozenset[int]] | None = None  # (model, production, served) to apply
        self._warmup: tuple[str, LiveWarmup | None] | None = None  # of the version last seen

    def set_partitions(self, partitions: Iterable[int]) -> None:
        """The events topic's partitions: a merged window waits for all of them (or their idling)."""
        self.partitions = sorted(set(partitions))
        if self._current is not None:
            self._current.store.partitions = self.partitions

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: drop their ADWINs (another worker continues from the checkpoint)."""
        v = self._current
        if v is None:
            return
        for p in partitions:
            v.partitions.pop(p, None)
            v.dirty.discard(p)

    def deployed(self, deployment: Deployment) -> None:
        """The worker serves `deployment` now: the next batch resolves, as superseded by its
        production version, every open incident of the model's versions it no longer serves
        (the old production after a promotion, a canary rolled back). Every worker does this at
        start and after each swap; the shared books make it happen once."""
        if deployment.production is None:
            return
        served = {v.version for v in (deployment.production, deployment.canary, deployment.shadow) if v}
        self._serving = (deployment.name, deployment.production.version, frozenset(served))

    def _retire(self, v: _Version) -> None:
        """Resolve the open incidents of versions no longer served (see `deployed`)."""
        if self._serving is None:
            return
        model, production, served = self._serving
        self._serving = None
        known = {int(x) for x in self.r.smembers(versions_key(self.namespace, model))}
        versions = [(model, version) for version in sorted(known - served)]
        for raw in all_incidents(self.r, self.namespace, versions):
            try:
                inc = DriftIncident.model_validate_json(raw)
            except ValidationError:
                continue
            if inc.model != model or inc.state != "open" or inc.version in served:
                continue
            policy = SharedAlertPolicy(
                self.r,
                policy_key(self.namespace, model, inc.version),
                incidents=self.config.incident_book,
                incidents_key=incidents_key(self.namespace, model, inc.version),
            )
            self._superseded += policy.supersede(production, record=v.store.record_decision)

    def _prefix(self, meta: ModelVersion) -> str:
        return drift_prefix(self.namespace, meta.name, meta.version)

    def _version(self, meta: ModelVersion) -> _Version | None:
        if self._current is not None and self._current.meta.ref == meta.ref:
            return self._current
        if not meta.reference:
            return None  # a model registered without reference data: nothing to compare with
        monitored = self._monitored_of(meta)
        refs = {
            name: to_reference(d)
            for name, d in meta.reference.items()
            if monitored is None or name in monitored
        }
        score = to_reference(meta.score_reference) if meta.score_reference else None
        cfg = self.config
        store = WindowStore(
            self.r,
            self.namespace,
            meta.name,
            meta.version,
            refs,
            score_reference=score,
            window_seconds=cfg.window_seconds,
            allowed_lateness=cfg.allowed_lateness,
            partitions=self.partitions,
            idle_timeout_seconds=cfg.idle_timeout_seconds,
            ttl_seconds=cfg.ttl_seconds,
            ks_sample_size=cfg.ks_sample_size,
            ks_sample_rate=cfg.ks_sample_rate,
            config=cfg.monitor,
            worker_id=self.worker_id,
            close_timeout_seconds=cfg.close_timeout_seconds,
            min_window_events=cfg.min_window_events,
        )
        numeric = {n for n, r in refs.items() if r.kind == "numeric" and len(r.sample) >= 2}
        numeric -= set(self._aggregates_of(meta))  # windowed detectors only (`_aggregates_of`)
        adwin_refs = {n: refs[n] for n in sorted(numeric)} if cfg.monitor.adwin_features else {}
        if score is not None and cfg.monitor.adwin_score:
            adwin_refs[SCORE_FEATURE] = score
        cusum_refs = {n: refs[n] for n in sorted(numeric)} if cfg.monitor.cusum else {}
        if score is not None and cfg.monitor.cusum:
            cusum_refs[SCORE_FEATURE] = score
        # The monitor's budget split over its streams (the outcome joiner's error CUSUM is one more).
        cusum_ert = cfg.monitor.cusum_ert_events * (len(cusum_refs) + 1)
        # The model's versions with drift state, for `_retire` (one key of its own: no slot to share).
        index = versions_key(self.namespace, meta.name)
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(index, meta.version)
        pipe.expire(index, max(cfg.ttl_seconds, 30 * 86_400))
        pipe.execute()
        policy = SharedAlertPolicy(
            self.r,
            policy_key(self.namespace, meta.name, meta.version),
            make=lambda: AlertPolicy(cooldown_seconds=cfg.cooldown_seconds),
            ttl_seconds=max(cfg.ttl_seconds, int(cfg.cooldown_seconds) + 60),
            history_key=alerts_key(self.namespace, meta.name, meta.version),
            incidents=cfg.incident_book,
            incidents_key=incidents_key(self.namespace, meta.name, meta.version),
        )
        previous = self._current
        if previous is not None:  # its incidents are no longer this worker's to report
            with contextlib.suppress(KeyError):
                self.metrics.incidents_open.remove(previous.meta.name, str(previous.meta.version))
        self._current = _Version(
            meta,
            store,
            policy,
            adwin_refs,
            numeric,
            cusum_refs=cusum_refs,
            cusum_ert=cusum_ert,
            boolean={f.name for f in meta.features if f.kind == "boolean"},
        )
        return self._current

    def _monitored_of(self, meta: ModelVersion) -> set[str] | None:
        """The inputs of `meta` that get detectors: its own view's raw features and the windowed
        aggregates whose reference was built from warm rows (`Distribution.warmup_seconds`;
        every input without a view), or the stage's setting for a version that recorded no view."""
        if meta.inputs is None:
            return self.monitored
        view = view_from_record(meta.inputs.view)
        if view is None:
            return None
        return set(view.passthrough) | set(self._aggregates_of(meta))

    def _aggregates_of(self, meta: ModelVersion) -> dict[str, float]:
        """The windowed aggregates of `meta` that get detectors, with their warm-up: those with a
        warm reference whose tiles are no longer than a drift window. A window read mid-tile covers
        ``W - tile`` to ``W`` (a 24 h window of 2 h tiles: 22 to 24 h), so a drift window shorter
        than a tile sees the value at one phase of that cycle while the reference averages every
        phase: a false drift. Only the merged windows (PSI, KS, missing rate) watch them: the
        per-partition ADWIN/CUSUM assume independent values, and an entity's successive aggregate
        values share most of their window (on the synthetic stream without drift, a 1 h sum's CUSUMs
        raised 7 critical false alarms in 28 h of event time)."""
        view = view_from_record(meta.inputs.view) if meta.inputs is not None else None
        if view is None:
            return {}
        tiles = tile_seconds(view)
        limit = self.config.window_seconds
        return {n: w for n, w in _warm_aggregates(meta, view).items() if tiles.get(n, 0.0) <= limit}

    def _warmup_of(self, meta: ModelVersion) -> LiveWarmup | None:
        """The live warm-up rule of `meta`'s monitored aggregates (None: it monitors none)."""
        if self._warmup is not None and self._warmup[0] == meta.ref:
            return self._warmup[1]
        view = view_from_record(meta.inputs.view) if meta.inputs is not None else None
        seconds = self._aggregates_of(meta)
        score = meta.score_reference
        if score is not None and score.warmup_seconds is not None:  # its inputs' longest warm-up
            seconds[SCORE_FEATURE] = score.warmup_seconds
        live = None
        if view is not None and seconds:
            key = OnlineStore.since_key(self.namespace, view.name)
            live = LiveWarmup(self.r, key, seconds, refresh_seconds=self.config.warmup_refresh_seconds)
        self._warmup = (meta.ref, live)
        return live

    def observe(
        self,
        meta: ModelVersion,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        rows: np.ndarray,
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
        unscored: Unscored = NO_UNSCORED,
    ) -> list[DriftOutput]:
        """Feed the rows the production version served; return the alerts and incident events to publish.

        ``rows`` index ``columns``; ``scores``, ``ts``, ``partitions`` and ``offsets`` are the
        rows' own (already picked). ``unscored``: the batch's events production's contract
        dead-lettered (see `Unscored`). A batch being redone (`rewound`) gets the alerts its
        failed attempt returned again, first.
        """
        alerts = self._observe(meta, columns, rows, scores, ts, partitions, offsets, unscored)
        if self._superseded:
            alerts, self._superseded = self._superseded + alerts, []
        if self._resend:
            fresh = {a.id for a in alerts}
            alerts = [a for a in self._resend if a.id not in fresh] + alerts
            self._resend = []
        self._unpublished += alerts
        return alerts

    def _observe(
        self,
        meta: ModelVersion,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        rows: np.ndarray,
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
        unscored: Unscored,
    ) -> list[DriftOutput]:
        v = self._version(meta)
        if v is None:
            return []
        self._retire(v)
        if len(rows) + len(unscored) == 0:
            return []
        picked = rows.tolist()
        batch: dict[str, np.ndarray] = {}
        live = self._warmup_of(meta)
        warm = live.masks(np.asarray(ts, dtype=np.float64)) if live is not None and len(rows) else {}
        for name, ref in v.store.references.items():
            if name == SCORE_FEATURE or name not in columns:
                continue
            col = columns[name]
            values = col[rows] if isinstance(col, np.ndarray) else [col[i] for i in picked]
            if name in v.boolean:  # a two-level category to the detectors
                batch[name] = boolean_categories(values)
            elif ref.kind == "numeric":
                batch[name] = numeric_values(values, len(values))  # None/strings -> NaN (missing)
            else:
                batch[name] = np.array(values, dtype=object)
            if name in warm:  # a warming value is neither a value nor missing: NaN skips ADWIN/CUSUM
                batch[name] = np.where(warm[name], batch[name], np.nan)
        if SCORE_FEATURE in warm:
            scores = np.where(warm[SCORE_FEATURE], np.asarray(scores, dtype=np.float64), np.nan)
        parts = np.asarray(partitions, dtype=np.int64)
        offs = np.asarray(offsets, dtype=np.int64)
        if len(unscored):
            rows_in = _Rows(
                batch, np.asarray(ts, dtype=np.float64), parts, offs, np.asarray(scores, np.float64)
            )
            both, counted = self._with_unscored(v, rows_in, unscored)
            for name, mask in warm.items():
                if name in counted:
                    counted[name][: len(mask)] &= mask
            added = v.store.add(
                both.columns, both.ts, both.parts, both.offs, scores=both.scores, counted=counted
            )
        else:
            counts = {name: mask for name, mask in warm.items() if name in batch or name == SCORE_FEATURE}
            added = v.store.add(batch, ts, parts, offs, scores=scores, counted=counts or None)
        signals = v.store.close_ready()
        recovered = list(v.store.recovered)  # decided by a worker that died before publishing them
        windows = list(v.store.windows)
        model, version = meta.name, str(meta.version)
        if added.late:
            self.metrics.late.labels(model, version).inc(added.late)
        if windows:
            self.metrics.windows.labels(model, version).inc(len({w.window_end_ts for w in windows}))
        if v.adwin_refs or v.cusum_refs:
            more, stats = self._adwin(v, batch, scores, ts, parts, offs)
            signals += more
            windows += stats
        self.metrics.record(model, version, windows)
        if windows:
            self._record_latest(meta, windows, v.store.bins)
        alerts = v.policy.decide(
            signals,
            model=meta.name,
            version=meta.version,
            windows=windows,
            record=v.store.record_decision,
        )
        if v.store.inflight and any(
            isinstance(a, DriftAlert) and a.detector in WINDOWED_DETECTORS for a in alerts
        ):
            fault_point("window-decided")  # a window's alerts decided and recorded, not produced yet
        alerts = recovered + alerts
        self.count(alerts)
        if signals or windows:
            book = v.policy.last_book
            if book is not None:
                self.metrics.incidents_open.labels(model, version).set(0 if book.open is None else 1)
        return alerts

    def count(self, outputs: Sequence[DriftOutput]) -> None:
        """Count the alerts and incident events about to be published."""
        for out in outputs:
            if isinstance(out, IncidentEvent):
                self.metrics.incident_events.labels(out.model, out.kind).inc()
                if out.kind == "resolved":
                    self.metrics.incidents_open.labels(out.model, str(out.version)).set(0)
            else:
                self.metrics.alerts.labels(out.severity, out.detector).inc()

    @staticmethod
    def _with_unscored(v: _Version, rows: _Rows, unscored: Unscored) -> tuple[_Rows, dict[str, np.ndarray]]:
        """The scored rows followed by the unscored events, and the mask of what each feature
        counts: an unscored event is missing for the inputs it names and not counted for the rest."""
        n, extra = len(rows.ts), len(unscored)

        def gap(name: str, size: int) -> np.ndarray:
            if v.store.references[name].kind == "numeric":
                return np.full(size, np.nan)
            return np.full(size, None, dtype=object)  # categorical (booleans included)

        scored, others = np.ones(n, dtype=bool), np.zeros(extra, dtype=bool)
        columns: dict[str, np.ndarray] = {}
        counted = {SCORE_FEATURE: np.concatenate([scored, others])}
        for name in v.store.references:
            if name == SCORE_FEATURE:
                continue
            own = rows.columns.get(name)
            columns[name] = np.concatenate([gap(name, n) if own is None else own, gap(name, extra)])
            named = np.fromiter((name in m for m in unscored.missing), dtype=bool, count=extra)
            counted[name] = np.concatenate([scored, named])
        both = _Rows(
            columns,
            np.concatenate([rows.ts, unscored.ts]),
            np.concatenate([rows.parts, unscored.partitions]),
            np.concatenate([rows.offs, unscored.offsets]),
            np.concatenate([rows.scores, np.full(extra, np.nan)]),
        )
        return both, counted

    def published(self) -> None:
        """The batch's outputs are durable and its offsets committed: its closed windows are published.

        Called by the worker right after the commit. A worker killed before this call leaves its
        windows pending, and another worker (or its own restart) publishes them again.
        """
        self._unpublished, self._resend = [], []
        v = self._current
        if v is not None:
            v.store.mark_published()

    def rewound(self) -> None:
        """The batch's outputs failed and it will be redone: the redo publishes its alerts again.

        Its windows are left to be taken over by the redo (from Redis); its other alerts (ADWIN's,
        whose detectors will not see the redone events again) are kept here for the redo.
        """
        self._resend = list({a.id: a for a in [*self._resend, *self._unpublished]}.values())
        self._unpublished = []
        v = self._current
        if v is not None:
            v.store.abandon()

    def _record_latest(
        self, meta: ModelVersion, windows: Sequence[WindowStat], bins: Mapping[str, Any] | None = None
    ) -> None:
        """Overwrite the latest statistic of each (detector, feature) with this batch's newest."""
        newest: dict[str, WindowStat] = {}
        for w in windows:
            name = f"{w.detector}:{w.feature}"
            if name not in newest or w.window_end_ts >= newest[name].window_end_ts:
                newest[name] = w
        key = latest_key(self.namespace, meta.name, meta.version)
        history = history_key(self.namespace, meta.name, meta.version)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={name: w.model_dump_json() for name, w in newest.items()})
        pipe.expire(key, self.config.ttl_seconds)
        if bins:
            binned = bins_key(self.namespace, meta.name, meta.version)
            pipe.hset(binned, mapping={f: json.dumps(b, separators=(",", ":")) for f, b in bins.items()})
            pipe.expire(binned, self.config.ttl_seconds)
        pipe.rpush(history, *[w.model_dump_json() for w in windows])  # for `driftline report`
        pipe.ltrim(history, -HISTORY_WINDOWS, -1)
        pipe.expire(history, self.config.ttl_seconds)
        pipe.execute()

    def _adwin(
        self,
        v: _Version,
        batch: Mapping[str, np.ndarray],
        scores: np.ndarray,
        ts: np.ndarray,
        parts: np.ndarray,
        offs: np.ndarray,
    ) -> tuple[list[DriftSignal], list[WindowStat]]:
        model, version = v.meta.name, str(v.meta.version)
        jobs: list[CusumJob] = []
        standardised: dict[str, np.ndarray] = {}  # per feature, for the whole batch: sliced per partition
        # Per partition, as each partition's detectors were fed one after another: ADWIN's, then CUSUM's.
        found: dict[int, tuple[list[DriftSignal], list[WindowStat]]] = {}
        for p in np.unique(parts).tolist():
            adwins = self._load(v, p)
            fresh = (parts == p) & (offs > adwins.offset)  # a replayed event was fed already
            if not fresh.any():
                continue
            signals, stats = found.setdefault(p, ([], []))
            for feature, det in adwins.detectors.items():
                values = scores if feature == SCORE_FEATURE else batch.get(feature)
                if values is None:
                    continue
                signals += det.update(
                    np.asarray(values, dtype=np.float64)[fresh], ts[fresh], offsets=offs[fresh], partition=p
                )
                stats += det.windows
                width, estimate = adwins.gauges(self.metrics, model, version, feature, p)
                width.set(det.width)
                if not math.isnan(det.estimate):
                    estimate.set(det.estimate)
            for feature, cus in adwins.cusums.items():
                values = scores if feature == SCORE_FEATURE else batch.get(feature)
                if values is None:
                    continue
                if feature not in standardised:
                    standardised[feature] = cus.standardised(np.asarray(values, dtype=np.float64))
                jobs.append(CusumJob(cus, standardised[feature][fresh], ts[fresh], offs[fresh], p))
            adwins.offset = int(offs[fresh].max())
            v.dirty.add(p)
        # Every partition's CUSUMs in one stacked pass (`detectors.cusum.update_many`).
        for job, more in zip(jobs, update_many(jobs), strict=True):
            cus, p = job.detector, int(job.partition or 0)
            found[p][0].extend(more)
            found[p][1].extend(cus.windows)
            statistic = cus.statistic
            if not math.isnan(statistic):
                v.partitions[p].cusum_gauge(self.metrics, model, version, cus.feature, p).set(statistic)
        return [s for sig, _ in found.values() for s in sig], [w for _, st in found.values() for w in st]

    def _adwin_key(self, v: _Version, partition: int) -> str:
        return f"{self._prefix(v.meta)}:~adwin:{partition}"

    def _load(self, v: _Version, partition: int) -> _Adwins:
        adwins = v.partitions.get(partition)
        if adwins is not None:
            return adwins
        raw = self.r.get(self._adwin_key(v, partition))
        m = self.config.monitor
        if raw is None:
            detectors = {
                f: AdwinDetector(
                    f, ref, delta=m.adwin_delta, warning=m.adwin_warning, critical=m.adwin_critical
                )
                for f, ref in v.adwin_refs.items()
            }
            adwins = _Adwins(detectors, cusums=self._cusums(v, {}))
        else:
            state = json.loads(raw)
            detectors = {
                f: AdwinDetector.from_state(s, reference=v.adwin_refs.get(f))
                for f, s in state["detectors"].items()
                if f in v.adwin_refs
            }
            adwins = _Adwins(detectors, int(state["offset"]), self._cusums(v, state.get("cusum") or {}))
        v.partitions[partition] = adwins
        return adwins

    def _cusums(self, v: _Version, saved: Mapping[str, Any]) -> dict[str, CusumDetector]:
        m = self.config.monitor
        out = {}
        for f, ref in v.cusum_refs.items():
            if f in saved:
                out[f] = CusumDetector.from_state(saved[f], reference=ref)
            else:
                out[f] = CusumDetector(
                    f, ref, k=m.cusum_k, ert_events=v.cusum_ert, warning=m.cusum_warning,
                    critical=m.cusum_critical, rearm=m.cusum_rearm, reference_margin=m.cusum_reference_margin,
                )  # fmt: skip
        return out

    def checkpoint(self) -> None:
        """Save the ADWIN state of every partition fed since the last checkpoint (one round trip)."""
        v = self._current
        if v is None or not v.dirty:
            return
        pipe = self.r.pipeline(transaction=True)
        for p in sorted(v.dirty):
            adwins = v.partitions.get(p)
            if adwins is None:
                continue
            state = json.dumps(adwins.state(), separators=(",", ":"))
            pipe.set(self._adwin_key(v, p), state, ex=self.config.ttl_seconds)
        pipe.execute()
        v.dirty.clear()
