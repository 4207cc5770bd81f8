"""The worker's check of each event against the production version's input contract.

Per event and model input (`inference.contract`): a value of the wrong kind is dead-lettered
(``feature_type``, naming the feature and the kind expected) or, with the version's policy
``wrong_type: missing``, scored as missing; an input the event lacks is scored as missing (or
dead-lettered, ``feature_missing``, with ``missing: dead_letter``); a field no deployed version
reads is counted. Every case is counted in ``driftline_input_problems_total{model, feature,
problem}`` (problem: ``wrong_type``, ``missing``, ``unknown_feature``), and a value scored as
missing is ``null`` to the drift detectors, so their missing-rate detector sees it.

Versions registered before contracts were recorded (``inputs is None``) are not checked.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from inference.contract import check_inputs, wrong_type_reason
from stream.dead_letter import DeadLetter
from stream.decode import EventBatch
from stream.scoring import Scorer


class InputGate:
    def __init__(self, registry: CollectorRegistry, worker_id: str) -> None:
        self.worker_id = worker_id
        self.problems = Counter(
            "driftline_input_problems",
            "Events whose model input was of the wrong kind, missing, or not a known input",
            ["model", "feature", "problem"],
            registry=registry,
        )

    def check(self, batch: EventBatch, scorer: Scorer) -> tuple[EventBatch, list[DeadLetter]]:
        """(the events to score, with wrong-typed values nulled per the policy; the dead letters)."""
        production = scorer.deployment.production
        if production is None or production.inputs is None or not len(batch):
            return batch, []
        inputs = production.inputs
        known = {r.name for meta, _ in scorer.versions() if meta.inputs for r in meta.inputs.raw}
        check = check_inputs(inputs.raw, [e.features for e in batch.events], known)
        model = production.name
        for problem, counts in (
            ("wrong_type", {f: len(rows) for f, rows in check.wrong_type.items()}),
            ("missing", check.missing),
            ("unknown_feature", check.unknown),
        ):
            for feature, count in counts.items():
                self.problems.labels(model, feature, problem).inc(count)

        kinds = inputs.kinds()
        dead: dict[int, DeadLetter] = {}
        nulled: dict[int, list[str]] = {}
        for i, feature in check.wrong_rows().items():
            if inputs.policy.wrong_type == "dead_letter":
                value = batch.events[i].features[feature]
                reason = wrong_type_reason(feature, kinds[feature], value, production.ref)
                dead[i] = batch.dead_letter(i, reason, "feature_type", self.worker_id)
        if inputs.policy.wrong_type == "missing":
            for feature, rows in check.wrong_type.items():
                for i in rows:
                    nulled.setdefault(i, []).append(feature)
        if inputs.policy.missing == "dead_letter" and check.missing:
            for i, event in enumerate(batch.events):
                absent = [r.name for r in inputs.raw if event.features.get(r.name) is None]
                if absent and i not in dead:
                    reason = (
                        f"features.{absent[0]}: {production.ref} needs it ({kinds[absent[0]]}), it is missing"
                    )
                    dead[i] = batch.dead_letter(i, reason, "feature_missing", self.worker_id)
        for i, features in nulled.items():
            event = batch.events[i]
            batch.events[i] = event.model_copy(
                update={"features": {**event.features, **dict.fromkeys(features)}}
            )
        if dead:
            batch = batch.subset([i for i in range(len(batch)) if i not in dead])
        return batch, list(dead.values())
