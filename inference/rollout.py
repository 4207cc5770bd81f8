"""When to promote or roll back a canary: a statistical decision from labeled outcome counts.

Pure functions: the caller counts each arm's labeled outcomes and errors (and, optionally, the
candidate's dead-letter rate) and acts on the returned `RolloutDecision`.

- Guards first: a dead-letter spike or an error-rate spike rolls back at once, before any test.
- Below `min_outcomes` labeled outcomes on either arm: wait.
- Rollback when the candidate is significantly worse (one-sided two-proportion z-test, pooled).
- Promote when it is non-inferior: the one-sided ``1 - alpha`` upper bound of the error-rate
  difference (Wald, unpooled) is below `margin`.

The decision is meant to be re-evaluated as outcomes arrive; every look is another chance of a
false call, so keep `min_outcomes` large enough that the first look is already well powered.

>>> policy = RolloutPolicy()
>>> decide_rollout(policy, 2000, 200, 2000, 204).action
'promote'
>>> decide_rollout(policy, 500, 150, 500, 50).action
'rollback'
>>> decide_rollout(policy, 100, 10, 5000, 500).reason
'waiting for 300 labeled outcomes per arm (candidate 100, production 5000)'
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import norm

Action = Literal["wait", "promote", "rollback"]


class RolloutPolicy(BaseModel):
    """Thresholds of the canary decision (rates are fractions in [0, 1])."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_outcomes: int = Field(300, ge=1)
    margin: float = Field(0.02, ge=0.0, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    spike_min_outcomes: int = Field(50, ge=1)
    spike_error_rate: float = Field(0.5, gt=0.0, le=1.0)
    max_dlq_rate: float = Field(0.05, ge=0.0, le=1.0)


class RolloutEvidence(BaseModel):
    """The numbers behind a decision. Rates and statistics are None when an arm has no outcomes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate_outcomes: int
    candidate_errors: int
    production_outcomes: int
    production_errors: int
    candidate_error_rate: float | None
    production_error_rate: float | None
    difference: float | None  # candidate - production
    p_worse: float | None  # one-sided p-value of "the candidate's error rate is higher"
    upper_bound: float | None  # one-sided 1 - alpha upper confidence bound of `difference`
    margin: float
    alpha: float
    dlq_rate: float | None = None


class RolloutDecision(BaseModel):
    """What to do with the canary, why (one sentence with the numbers), and the evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    reason: str
    evidence: RolloutEvidence


def _check_counts(arm: str, outcomes: int, errors: int) -> None:
    if outcomes < 0 or errors < 0:
        raise ValueError(f"{arm} outcomes and errors must be >= 0, got {outcomes} and {errors}")
    if errors > outcomes:
        raise ValueError(f"{arm} has more errors ({errors}) than outcomes ({outcomes})")


def _pct(rate: float) -> str:
    return f"{rate:.1%}"


def _points(diff: float) -> str:
    return f"{diff * 100:+.1f} points"


def evidence(
    policy: RolloutPolicy,
    candidate_outcomes: int,
    candidate_errors: int,
    production_outcomes: int,
    production_errors: int,
    dlq_rate: float | None = None,
) -> RolloutEvidence:
    """Error rates, their difference, the z-test p-value and the upper bound (no decision).

    >>> ev = evidence(RolloutPolicy(), 500, 150, 500, 50)
    >>> round(ev.difference, 3), ev.p_worse < 1e-6, round(ev.upper_bound, 3)
    (0.2, True, 0.24)
    """
    _check_counts("candidate", candidate_outcomes, candidate_errors)
    _check_counts("production", production_outcomes, production_errors)
    if dlq_rate is not None and not 0.0 <= dlq_rate <= 1.0:
        raise ValueError(f"dlq_rate must be in [0, 1], got {dlq_rate}")
    n_c, e_c, n_p, e_p = candidate_outcomes, candidate_errors, production_outcomes, production_errors
    rate_c = e_c / n_c if n_c else None
    rate_p = e_p / n_p if n_p else None
    diff = p_worse = upper = None
    if rate_c is not None and rate_p is not None:
        diff = rate_c - rate_p
        pooled = (e_c + e_p) / (n_c + n_p)
        se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_p))
        # se_pooled == 0 only when both arms are all-errors or error-free: equal rates, z = 0.
        z = diff / se_pooled if se_pooled > 0.0 else 0.0
        p_worse = float(norm.sf(z))
        se = math.sqrt(rate_c * (1.0 - rate_c) / n_c + rate_p * (1.0 - rate_p) / n_p)
        upper = diff + float(norm.ppf(1.0 - policy.alpha)) * se
    return RolloutEvidence(
        candidate_outcomes=n_c,
        candidate_errors=e_c,
        production_outcomes=n_p,
        production_errors=e_p,
        candidate_error_rate=rate_c,
        production_error_rate=rate_p,
        difference=diff,
        p_worse=p_worse,
        upper_bound=upper,
        margin=policy.margin,
        alpha=policy.alpha,
        dlq_rate=dlq_rate,
    )


def decide_rollout(
    policy: RolloutPolicy,
    candidate_outcomes: int,
    candidate_errors: int,
    production_outcomes: int,
    production_errors: int,
    dlq_rate: float | None = None,
) -> RolloutDecision:
    """Wait, promote or roll back the candidate, given each arm's labeled outcomes and errors.

    `dlq_rate`: the candidate's share of events sent to the dead-letter queue, if known.
    Raises ValueError on negative counts, errors > outcomes or a dlq_rate outside [0, 1].

    >>> decide_rollout(RolloutPolicy(), 60, 40, 1000, 100).reason
    'candidate error rate 66.7% over 60 outcomes exceeds the 50.0% spike limit'
    """
    ev = evidence(
        policy, candidate_outcomes, candidate_errors, production_outcomes, production_errors, dlq_rate
    )

    def decision(action: Action, reason: str) -> RolloutDecision:
        return RolloutDecision(action=action, reason=reason, evidence=ev)

    if dlq_rate is not None and dlq_rate > policy.max_dlq_rate:
        return decision(
            "rollback",
            f"candidate dead-letter rate {_pct(dlq_rate)} exceeds the {_pct(policy.max_dlq_rate)} limit",
        )
    rate_c = ev.candidate_error_rate
    if (
        rate_c is not None
        and candidate_outcomes >= policy.spike_min_outcomes
        and rate_c > policy.spike_error_rate
    ):
        return decision(
            "rollback",
            f"candidate error rate {_pct(rate_c)} over {candidate_outcomes} outcomes exceeds the "
            f"{_pct(policy.spike_error_rate)} spike limit",
        )
    if min(candidate_outcomes, production_outcomes) < policy.min_outcomes:
        return decision(
            "wait",
            f"waiting for {policy.min_outcomes} labeled outcomes per arm (candidate {candidate_outcomes}, "
            f"production {production_outcomes})",
        )
    # Both arms have >= min_outcomes >= 1 outcomes, so every statistic is defined.
    assert rate_c is not None and ev.production_error_rate is not None
    assert ev.difference is not None and ev.p_worse is not None and ev.upper_bound is not None
    rates = f"candidate error rate {_pct(rate_c)} vs production {_pct(ev.production_error_rate)}"
    if ev.p_worse < policy.alpha and ev.difference > 0.0:
        return decision(
            "rollback",
            f"{rates} is significantly worse ({_points(ev.difference)}, p={ev.p_worse:.2g} < "
            f"{policy.alpha:g})",
        )
    bound = f"{1.0 - policy.alpha:.0%} upper bound of the difference {_points(ev.upper_bound)}"
    if ev.upper_bound < policy.margin:
        return decision("promote", f"{rates} is non-inferior ({bound} < {_points(policy.margin)})")
    return decision(
        "wait", f"{rates} is not yet conclusive ({bound} >= {_points(policy.margin)}, p={ev.p_worse:.2g})"
    )
