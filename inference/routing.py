"""Sticky canary routing: each entity id maps to a fixed bucket in [0, 1).

The bucket is the first 53 bits of blake2b-64 of the UTF-8 id, so it is the same in every process,
host and Python version (unlike ``hash()``). An entity is on the canary arm when its bucket is
below the canary fraction: the same entity always gets the same arm for a given fraction, and
raising the fraction only adds entities to the canary.

>>> entity_buckets(["card-1", "card-7"]).round(6).tolist()
[0.971243, 0.396501]
>>> from inference.metadata import Deployment, ModelVersion, FeatureSpec
>>> mv = ModelVersion(name="fraud", version=1, sha256="0" * 64, input_name="input",
...                   features=[FeatureSpec(name="amount", kind="numeric")],
...                   created_at="2026-01-01T00:00:00Z", stage="canary")
>>> d = Deployment(name="fraud", production=None, canary=mv, canary_fraction=0.5, shadow=None)
>>> route(d, ["card-1", "card-7"])
array([0, 1], dtype=int8)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial

import numpy as np

from inference.metadata import Deployment

PRODUCTION: int = 0
CANARY: int = 1

_blake2b_64 = partial(hashlib.blake2b, digest_size=8)


def _digest(entity_id: str) -> bytes:
    return _blake2b_64(entity_id.encode("utf-8")).digest()


def entity_buckets(entity_ids: Sequence[str]) -> np.ndarray:
    """float64 bucket in [0, 1) per entity id, stable across processes and Python versions."""
    n = len(entity_ids)
    raw = np.frombuffer(b"".join(map(_digest, entity_ids)), dtype=">u8", count=n)
    # Top 53 bits: exactly representable in float64, so the result is always < 1.
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def route(deployment: Deployment, entity_ids: Sequence[str]) -> np.ndarray:
    """int8 arm per event: 0 = production, 1 = canary (bucket < canary_fraction, if a canary exists)."""
    if deployment.canary is None or deployment.canary_fraction <= 0.0:
        return np.zeros(len(entity_ids), dtype=np.int8)
    return (entity_buckets(entity_ids) < deployment.canary_fraction).astype(np.int8)
