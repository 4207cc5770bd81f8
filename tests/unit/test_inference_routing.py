"""Sticky canary routing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from inference.metadata import Deployment, FeatureSpec, ModelVersion, Stage
from inference.routing import CANARY, PRODUCTION, entity_buckets, route

IDS = [f"card-{i:06d}" for i in range(20_000)]


def _version(v: int, stage: Stage) -> ModelVersion:
    return ModelVersion(
        name="fraud",
        version=v,
        sha256=f"{v:064x}",
        features=[FeatureSpec(name="amount", kind="numeric")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage=stage,
    )


def deployment(fraction: float, with_canary: bool = True) -> Deployment:
    return Deployment(
        name="fraud",
        production=_version(1, "production"),
        canary=_version(2, "canary") if with_canary else None,
        canary_fraction=fraction,
        shadow=None,
    )


def test_buckets_are_in_unit_interval_and_uniform() -> None:
    b = entity_buckets(IDS)
    assert b.dtype == np.float64 and b.shape == (len(IDS),)
    assert b.min() >= 0.0 and b.max() < 1.0
    deciles = np.histogram(b, bins=10, range=(0, 1))[0] / len(IDS)
    assert np.all(np.abs(deciles - 0.1) < 0.015), deciles
    assert len(np.unique(b)) == len(IDS)
    assert entity_buckets([]).shape == (0,)


def test_buckets_are_pinned_values() -> None:
    # blake2b is standardised: these values must never change, or every canary reshuffles on upgrade.
    assert entity_buckets(["card-1", "card-7"]).round(6).tolist() == [0.971243, 0.396501]
    ids = ["", "ünïcode-✓", "card-000001", "x" * 1000]
    expected = [
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "big") >> 11) / 2**53
        for i in ids
    ]
    assert entity_buckets(ids).tolist() == expected


def test_buckets_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "import json, sys; from inference.routing import entity_buckets; "
        "print(json.dumps(entity_buckets(sys.argv[1:]).tolist()))"
    )
    sample = IDS[:50]
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", code, *sample], capture_output=True, text=True, env=env, check=True
        )
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1] == entity_buckets(sample).tolist()


def test_fraction_is_respected() -> None:
    arms = route(deployment(0.2), IDS)
    assert arms.dtype == np.int8
    assert set(np.unique(arms).tolist()) == {PRODUCTION, CANARY}
    assert abs(arms.mean() - 0.2) < 0.015


def test_same_entity_same_arm_across_calls_and_batches() -> None:
    d = deployment(0.3)
    first = route(d, IDS)
    np.testing.assert_array_equal(route(d, IDS), first)
    perm = np.random.default_rng(0).permutation(len(IDS))
    shuffled = [IDS[i] for i in perm]
    np.testing.assert_array_equal(route(d, shuffled), first[perm])
    # Repeated entities within a batch agree with each other.
    arms = route(d, [IDS[5]] * 10 + [IDS[6]] * 10)
    assert len(set(arms[:10].tolist())) == 1 and len(set(arms[10:].tolist())) == 1


def test_raising_the_fraction_only_adds_entities() -> None:
    small = route(deployment(0.1), IDS).astype(bool)
    large = route(deployment(0.3), IDS).astype(bool)
    assert np.all(large[small])  # every earlier canary entity stays on the canary
    assert large.sum() > small.sum() + 0.15 * len(IDS)


def test_no_canary_routes_everything_to_production() -> None:
    assert not route(deployment(0.5, with_canary=False), IDS).any()
    assert not route(deployment(0.0), IDS).any()
    assert route(deployment(0.5), []).shape == (0,)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.9])
def test_arm_is_bucket_below_fraction(fraction: float) -> None:
    np.testing.assert_array_equal(route(deployment(fraction), IDS), entity_buckets(IDS) < fraction)
