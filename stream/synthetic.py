"""A card-fraud-like event generator with a drift schedule, vectorised with numpy.

Twelve numeric and two categorical features per event, and a binary label from a known
linear rule plus label noise. The schedule injects:

* **covariate drift** from event ``N`` (``covariate@N``): the drifted features' means move by
  ``shift`` times their pre-drift standard deviation (``DRIFTED_FEATURES`` gives which way), and
  the merchant-category mix moves towards online and electronics;
* **concept drift** from event ``M`` (``concept@M``): labels follow a different rule;

each either abrupt (``width=0``) or gradual, ramping linearly over ``width`` events.

>>> gen = FraudGenerator(seed=7, entities=100, schedule=DriftSchedule.parse(["covariate@500"]))
>>> batch = gen.batch(0, 1000)
>>> len(batch), sorted(batch.numeric)[:3]
(1000, ['account_age_days', 'amount', 'card_present'])
>>> bool(batch.numeric["amount"][500:].mean() > batch.numeric["amount"][:500].mean())
True
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

# name -> (reference mean, reference standard deviation) of the pre-drift distribution.
NUMERIC_REFERENCE: dict[str, tuple[float, float]] = {
    "amount": (54.87, 61.30),  # lognormal(3.6, 0.9)
    "hour": (11.5, 6.92),  # uniform 0..23
    "distance_from_home": (7.389, 9.686),  # lognormal(1.5, 1.0)
    "distance_from_last_txn": (3.387, 6.079),  # lognormal(0.5, 1.2)
    "ratio_to_median_amount": (1.197, 0.788),  # lognormal(0, 0.6)
    "merchant_risk": (0.2857, 0.1597),  # beta(2, 5)
    "account_age_days": (800.0, 565.7),  # gamma(2, 400)
    "card_present": (0.6, 0.49),
    "used_chip": (0.5, 0.5),
    "used_pin": (0.3, 0.458),
    "online_order": (0.35, 0.477),
    "device_trust_score": (0.7, 0.15),  # normal(0.7, 0.15)
}
NUMERIC_FEATURES = list(NUMERIC_REFERENCE)
CATEGORICAL_FEATURES = ["merchant_category", "country"]
MERCHANT_CATEGORIES = ["grocery", "restaurant", "gas", "electronics", "travel", "online_retail"]
MERCHANT_P_BEFORE = np.array([0.30, 0.20, 0.15, 0.10, 0.10, 0.15])
MERCHANT_P_AFTER = np.array([0.15, 0.10, 0.10, 0.25, 0.15, 0.25])
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "BR", "NG", "IN"]
COUNTRY_P = np.array([0.40, 0.15, 0.12, 0.10, 0.08, 0.07, 0.04, 0.04])

# Covariate drift moves these features' means by `shift` reference std devs, in this direction.
DRIFTED_FEATURES: dict[str, float] = {
    "amount": 1.0,
    "distance_from_home": 1.0,
    "merchant_risk": 1.0,
    "device_trust_score": -1.0,
}

# Label rules: logit = intercept + sum(weight * standardised feature); label = logit > 0.
RULE_BEFORE: dict[str, float] = {
    "intercept": -2.6,
    "amount": 1.1,
    "distance_from_home": 0.9,
    "merchant_risk": 1.0,
    "device_trust_score": -0.8,
    "online_order": 0.6,
    "card_present": -0.4,
}
RULE_AFTER: dict[str, float] = {
    "intercept": -2.6,
    "amount": -0.9,
    "distance_from_last_txn": 1.2,
    "merchant_risk": 1.0,
    "account_age_days": -1.0,
    "online_order": -0.6,
    "used_pin": -0.5,
}


def rule_labels(numeric: dict[str, np.ndarray], rule: dict[str, float]) -> np.ndarray:
    """Noise-free labels (0/1) of a label rule over numeric feature columns."""
    n = len(next(iter(numeric.values())))
    logit = np.full(n, rule["intercept"])
    for name, weight in rule.items():
        if name != "intercept":
            mean, std = NUMERIC_REFERENCE[name]
            logit += weight * (numeric[name] - mean) / std
    return (logit > 0).astype(np.int8)


@dataclass(frozen=True)
class DriftSchedule:
    """When drift starts and how it ramps in.

    >>> s = DriftSchedule.parse(["covariate@100", "concept@300"], width=100)
    >>> s.covariate_weight(np.array([99, 100, 150, 200, 999])).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """

    covariate_at: int | None = None
    concept_at: int | None = None
    width: int = 0
    shift: float = 1.0

    @classmethod
    def parse(cls, specs: list[str], width: int = 0, shift: float = 1.0) -> DriftSchedule:
        """Parse ``kind@N`` specs; raises ``ValueError`` with a one-line reason."""
        at: dict[str, int] = {}
        for spec in specs:
            kind, sep, start = spec.partition("@")
            if not sep or kind not in ("covariate", "concept"):
                raise ValueError(f"bad drift spec {spec!r}: expected covariate@N or concept@N")
            if not start.isdigit():
                raise ValueError(f"bad drift spec {spec!r}: N must be a non-negative integer")
            if kind in at:
                raise ValueError(f"drift kind {kind!r} given twice")
            at[kind] = int(start)
        if width < 0:
            raise ValueError("drift width must be >= 0")
        return cls(at.get("covariate"), at.get("concept"), width, shift)

    def _ramp(self, start: int | None, index: np.ndarray) -> np.ndarray:
        if start is None:
            return np.zeros(len(index))
        if self.width == 0:
            return (index >= start).astype(float)
        return np.clip((index - start) / self.width, 0.0, 1.0)

    def covariate_weight(self, index: np.ndarray) -> np.ndarray:
        return self._ramp(self.covariate_at, index)

    def concept_weight(self, index: np.ndarray) -> np.ndarray:
        return self._ramp(self.concept_at, index)


@dataclass
class Batch:
    """A column-oriented batch of generated events."""

    index: np.ndarray
    event_ids: list[str]
    entity_ids: list[str]
    ts: np.ndarray  # epoch seconds, float64
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray
    concept_new: np.ndarray  # bool: which label rule produced the label

    def __len__(self) -> int:
        return len(self.index)

    def event_dicts(self) -> list[dict[str, Any]]:
        """Events as wire-ready dicts following the ``RawEvent`` contract."""
        columns = {name: col.tolist() for name, col in {**self.numeric, **self.categorical}.items()}
        names = list(columns)
        stamps = [datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") for t in self.ts]
        return [
            {
                "event_id": self.event_ids[i],
                "entity_id": self.entity_ids[i],
                "ts": stamps[i],
                "features": {name: columns[name][i] for name in names},
            }
            for i in range(len(self.index))
        ]


@dataclass
class FraudGenerator:
    """Deterministic for a given seed: the same seed yields the same events."""

    seed: int = 0
    entities: int = 1000
    schedule: DriftSchedule = field(default_factory=DriftSchedule)
    start_ts: float = field(default_factory=lambda: datetime.now(UTC).timestamp())
    mean_gap_s: float = 0.5  # mean event-time gap between consecutive events
    label_noise: float = 0.02
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        if self.entities < 1:
            raise ValueError("entities must be >= 1")
        self._rng = np.random.default_rng(self.seed)
        self._next_index = 0
        self._clock = self.start_ts

    def batch(self, start: int, n: int) -> Batch:
        """Events ``start .. start+n-1``; batches must be requested in order."""
        if start != self._next_index:
            raise ValueError(f"batches must be contiguous: expected start {self._next_index}")
        self._next_index += n
        rng = self._rng
        index = np.arange(start, start + n)
        numeric = {
            "amount": rng.lognormal(3.6, 0.9, n),
            "hour": rng.integers(0, 24, n).astype(float),
            "distance_from_home": rng.lognormal(1.5, 1.0, n),
            "distance_from_last_txn": rng.lognormal(0.5, 1.2, n),
            "ratio_to_median_amount": rng.lognormal(0.0, 0.6, n),
            "merchant_risk": rng.beta(2.0, 5.0, n),
            "account_age_days": rng.gamma(2.0, 400.0, n),
            "card_present": (rng.random(n) < 0.6).astype(float),
            "used_chip": (rng.random(n) < 0.5).astype(float),
            "used_pin": (rng.random(n) < 0.3).astype(float),
            "online_order": (rng.random(n) < 0.35).astype(float),
            "device_trust_score": rng.normal(0.7, 0.15, n),
        }
        cov_w = self.schedule.covariate_weight(index)
        for name, direction in DRIFTED_FEATURES.items():
            numeric[name] = (
                numeric[name] + direction * self.schedule.shift * NUMERIC_REFERENCE[name][1] * cov_w
            )
        numeric = {name: np.round(col, 4) for name, col in numeric.items()}

        # Categorical mix: per event, a mixture of the before/after probabilities.
        merchant_cdf = np.cumsum(
            (1 - cov_w)[:, None] * MERCHANT_P_BEFORE + cov_w[:, None] * MERCHANT_P_AFTER, axis=1
        )
        merchant_idx = (rng.random(n)[:, None] > merchant_cdf).sum(axis=1).clip(0, 5)
        country_idx = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
        categorical = {
            "merchant_category": np.array(MERCHANT_CATEGORIES)[merchant_idx],
            "country": np.array(COUNTRIES)[country_idx],
        }

        concept_new = rng.random(n) < self.schedule.concept_weight(index)
        labels = np.where(concept_new, rule_labels(numeric, RULE_AFTER), rule_labels(numeric, RULE_BEFORE))
        flip = rng.random(n) < self.label_noise
        labels = np.where(flip, 1 - labels, labels).astype(np.int8)

        entity_idx = rng.integers(0, self.entities, n)
        gaps = rng.exponential(self.mean_gap_s, n)
        ts = self._clock + np.cumsum(gaps)
        self._clock = float(ts[-1]) if n else self._clock
        return Batch(
            index=index,
            event_ids=[f"{self.run_id}-{i:09d}" for i in index.tolist()],
            entity_ids=[f"card-{e:06d}" for e in entity_idx.tolist()],
            ts=ts,
            numeric=numeric,
            categorical=categorical,
            labels=labels,
            concept_new=concept_new,
        )

    def batches(self, n: int, chunk: int = 5000) -> Iterator[Batch]:
        done = 0
        while done < n:
            size = min(chunk, n - done)
            yield self.batch(self._next_index, size)
            done += size
