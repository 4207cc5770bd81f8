"""Canary rollout decisions: guards, waiting, the z-test and the non-inferiority bound."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import chi2_contingency, norm

from inference.rollout import RolloutPolicy, decide_rollout, evidence

POLICY = RolloutPolicy()


def test_equal_rates_with_enough_outcomes_promote() -> None:
    d = decide_rollout(POLICY, 2000, 200, 2000, 200)
    assert d.action == "promote"
    assert d.evidence.difference == 0.0
    assert d.evidence.upper_bound is not None and 0.0 < d.evidence.upper_bound < POLICY.margin
    assert "non-inferior" in d.reason and "10.0%" in d.reason


def test_clearly_worse_candidate_rolls_back() -> None:
    d = decide_rollout(POLICY, 500, 150, 500, 50)
    assert d.action == "rollback"
    assert d.evidence.p_worse is not None and d.evidence.p_worse < 1e-6
    assert d.evidence.difference == pytest.approx(0.2)
    assert "30.0%" in d.reason and "10.0%" in d.reason


def test_better_candidate_promotes_not_rolls_back() -> None:
    d = decide_rollout(POLICY, 500, 25, 500, 50)
    assert d.action == "promote"
    assert d.evidence.p_worse is not None and d.evidence.p_worse > 0.99


@pytest.mark.parametrize(("cand", "prod"), [((100, 10), (5000, 500)), ((5000, 500), (100, 10))])
def test_too_few_outcomes_on_either_arm_wait(cand: tuple[int, int], prod: tuple[int, int]) -> None:
    d = decide_rollout(POLICY, *cand, *prod)
    assert d.action == "wait"
    assert "300" in d.reason


def test_no_outcomes_yet_wait_with_undefined_statistics() -> None:
    d = decide_rollout(POLICY, 0, 0, 0, 0)
    assert d.action == "wait"
    ev = d.evidence
    assert ev.candidate_error_rate is None and ev.difference is None and ev.p_worse is None


def test_inconclusive_difference_waits() -> None:
    d = decide_rollout(POLICY, 1000, 110, 1000, 100)
    assert d.action == "wait"
    assert d.evidence.p_worse is not None and d.evidence.p_worse > POLICY.alpha
    assert d.evidence.upper_bound is not None and d.evidence.upper_bound >= POLICY.margin


def test_significantly_worse_rolls_back_even_within_the_margin() -> None:
    # +0.5 points on a million outcomes each: inside the margin, yet a real degradation.
    d = decide_rollout(POLICY, 1_000_000, 105_000, 1_000_000, 100_000)
    assert d.evidence.upper_bound is not None and d.evidence.upper_bound < POLICY.margin
    assert d.action == "rollback"


def test_error_spike_rolls_back_before_min_outcomes() -> None:
    d = decide_rollout(POLICY, 60, 40, 1000, 100)
    assert d.action == "rollback"
    assert "spike" in d.reason and "66.7%" in d.reason
    # The same rate over fewer than spike_min_outcomes is not yet a spike.
    assert decide_rollout(POLICY, 45, 30, 1000, 100).action == "wait"


def test_dead_letter_spike_rolls_back_at_once() -> None:
    d = decide_rollout(POLICY, 10, 0, 1000, 100, dlq_rate=0.08)
    assert d.action == "rollback"
    assert d.evidence.dlq_rate == 0.08
    assert "dead-letter" in d.reason and "8.0%" in d.reason
    assert decide_rollout(POLICY, 10, 0, 1000, 100, dlq_rate=0.05).action == "wait"
    assert decide_rollout(POLICY, 2000, 200, 2000, 200, dlq_rate=0.01).action == "promote"


@pytest.mark.parametrize(("e_c", "e_p"), [(120, 100), (90, 100), (300, 100)])
def test_statistics_match_a_direct_computation(e_c: int, e_p: int) -> None:
    n_c, n_p = 1000, 1200
    ev = evidence(POLICY, n_c, e_c, n_p, e_p)
    p_c, p_p = e_c / n_c, e_p / n_p
    pooled = np.float64(e_c + e_p) / (n_c + n_p)
    z = (p_c - p_p) / np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_p))
    assert ev.p_worse == pytest.approx(float(norm.sf(z)), abs=1e-12)
    # Independent route: pooled z^2 is Pearson's chi-square without continuity correction.
    table = np.array([[e_c, n_c - e_c], [e_p, n_p - e_p]])
    p_two_sided = chi2_contingency(table, correction=False).pvalue
    one_sided = p_two_sided / 2 if p_c > p_p else 1 - p_two_sided / 2
    assert ev.p_worse == pytest.approx(one_sided, abs=1e-12)
    se = np.sqrt(p_c * (1 - p_c) / n_c + p_p * (1 - p_p) / n_p)
    assert ev.upper_bound == pytest.approx(p_c - p_p + 1.6448536269514722 * se, abs=1e-12)


def test_error_free_arms_are_equal_not_undefined() -> None:
    d = decide_rollout(POLICY, 500, 0, 500, 0)
    assert d.evidence.p_worse == 0.5
    assert d.action == "promote"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 11, 100, 5), "candidate has more errors"),
        ((10, 1, 100, 101), "production has more errors"),
        ((-1, 0, 100, 5), "must be >= 0"),
        ((10, -1, 100, 5), "must be >= 0"),
    ],
)
def test_invalid_counts_are_refused(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide_rollout(POLICY, *args)


def test_invalid_dlq_rate_and_policy_are_refused() -> None:
    with pytest.raises(ValueError, match="dlq_rate"):
        decide_rollout(POLICY, 10, 1, 10, 1, dlq_rate=1.5)
    with pytest.raises(ValidationError):
        RolloutPolicy(alpha=0.0)
    with pytest.raises(ValidationError):
        RolloutPolicy(min_outcome=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        POLICY.margin = 0.1  # type: ignore[misc]


def test_stricter_policy_changes_the_decision() -> None:
    strict = RolloutPolicy(margin=0.005, min_outcomes=1000)
    assert decide_rollout(strict, 2000, 200, 2000, 200).action == "wait"
    assert decide_rollout(POLICY, 2000, 200, 2000, 200).action == "promote"
