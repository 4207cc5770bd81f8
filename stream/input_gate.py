"""The worker's check of each event against the input contract of the version that scores it.

Each event is routed as the scorer routes it (`inference.routing.route`: production, or the
canary) and checked against that version's contract (`inference.contract`): a value of the
wrong kind is dead-lettered (``feature_type``, naming the feature and the kind expected) or,
with the version's policy ``wrong_type: missing``, scored as missing; an input the event lacks
is scored as missing (or dead-lettered, ``feature_missing``, with ``missing: dead_letter``); a
field no deployed version reads is counted. Every case is counted in
``driftline_input_problems_total{model, feature, problem}`` (problem: ``wrong_type``,
``missing``, ``unknown_feature``). The missing-rate detector sees each case either way: a value
scored as missing is ``null`` to the drift detectors, and an event production's contract
dead-lettered is handed to the drift stage as `stream.drift.Unscored` (its offending inputs
missing, nothing scored, the feature store untouched).

A version registered before contracts were recorded (``inputs is None``) is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from inference.contract import check_inputs, wrong_type_reason
from inference.metadata import ModelVersion
from inference.routing import route
from stream.dead_letter import DeadLetter
from stream.decode import EventBatch
from stream.drift import NO_UNSCORED, Unscored
from stream.scoring import Scorer


@dataclass
class Gated:
    """What the gate lets through: the events to score (wrong types nulled per policy), the dead
    letters, and production's dead-lettered events for its missing-rate detector."""

    batch: EventBatch
    dead: list[DeadLetter]
    unscored: Unscored = NO_UNSCORED


@dataclass
class _Refused:
    """One version's verdict on its rows: dead letters, and per dead letter the inputs that count
    as missing (wrong-typed or absent), by batch row."""

    dead: dict[int, DeadLetter]
    offending: dict[int, list[str]]


class InputGate:
    def __init__(self, registry: CollectorRegistry, worker_id: str) -> None:
        self.worker_id = worker_id
        self.problems = Counter(
            "driftline_input_problems",
            "Events whose model input was of the wrong kind, missing, or not a known input",
            ["model", "feature", "problem"],
            registry=registry,
        )

    def check(self, batch: EventBatch, scorer: Scorer) -> Gated:
        """Check every event against the contract of the version it is routed to (see the module)."""
        d = scorer.deployment
        if d.production is None or not len(batch):
            return Gated(batch, [])
        known = {r.name for meta, _ in scorer.versions() if meta.inputs for r in meta.inputs.raw}
        arm_of = route(d, batch.entity_ids)  # the scorer's routing: the same arm for the same entity
        arms = [(d.production, np.flatnonzero(arm_of == 0), True)]
        if d.canary is not None:
            arms.append((d.canary, np.flatnonzero(arm_of == 1), False))
        dead: dict[int, DeadLetter] = {}
        unscored = NO_UNSCORED
        for meta, rows, production in arms:
            if meta.inputs is None or not len(rows):
                continue
            refused = self._check(batch, meta, rows.tolist(), known)
            dead.update(refused.dead)
            if production and refused.dead:  # the drift stage monitors production's events only
                unscored = _unscored(batch, refused)
        if dead:
            batch = batch.subset([i for i in range(len(batch)) if i not in dead])
        return Gated(batch, [dead[i] for i in sorted(dead)], unscored)

    def _check(self, batch: EventBatch, meta: ModelVersion, rows: list[int], known: set[str]) -> _Refused:
        """Check `rows` against `meta`'s contract: count, null wrong types (policy), dead-letter."""
        assert meta.inputs is not None
        inputs = meta.inputs
        check = check_inputs(inputs.raw, [batch.events[i].features for i in rows], known)
        for problem, counts in (
            ("wrong_type", {f: len(at) for f, at in check.wrong_type.items()}),
            ("missing", check.missing),
            ("unknown_feature", check.unknown),
        ):
            for feature, count in counts.items():
                self.problems.labels(meta.name, feature, problem).inc(count)

        kinds = inputs.kinds()
        refused = _Refused({}, {})
        wrong: dict[int, list[str]] = {}  # batch row -> its wrong-typed inputs, in contract order
        for feature in (r.name for r in inputs.raw if r.name in check.wrong_type):
            for j in check.wrong_type[feature]:
                wrong.setdefault(rows[j], []).append(feature)
        if inputs.policy.wrong_type == "dead_letter":
            for i, features in wrong.items():
                value = batch.events[i].features[features[0]]
                reason = wrong_type_reason(features[0], kinds[features[0]], value, meta.ref)
                refused.dead[i] = batch.dead_letter(i, reason, "feature_type", self.worker_id)
                absent = [r.name for r in inputs.raw if batch.events[i].features.get(r.name) is None]
                refused.offending[i] = features + absent  # as it would have been scored: both missing
        if inputs.policy.missing == "dead_letter" and check.missing:
            for i in rows:
                absent = [r.name for r in inputs.raw if batch.events[i].features.get(r.name) is None]
                if absent and i not in refused.dead:
                    need = f"{meta.ref} needs it ({kinds[absent[0]]}), it is missing"
                    reason = f"features.{absent[0]}: {need}"
                    refused.dead[i] = batch.dead_letter(i, reason, "feature_missing", self.worker_id)
                    refused.offending[i] = absent
        if inputs.policy.wrong_type == "missing":  # scored with the value nulled
            for i, features in wrong.items():
                event = batch.events[i]
                batch.events[i] = event.model_copy(
                    update={"features": {**event.features, **dict.fromkeys(features)}}
                )
        return refused


def _unscored(batch: EventBatch, refused: _Refused) -> Unscored:
    """Production's dead-lettered events as the drift stage counts them (offending inputs missing)."""
    rows = sorted(refused.dead)
    times = batch.event_times()
    return Unscored(
        ts=times[rows],
        partitions=np.array([batch.partitions[i] for i in rows], dtype=np.int64),
        offsets=np.array([batch.offsets[i] for i in rows], dtype=np.int64),
        missing=[frozenset(refused.offending[i]) for i in rows],
    )
