"""Retraining: fit a candidate on recent labeled rows and register it only if it holds up.

The rows are the newest `RetrainConfig.recent_rows` by event time, optionally plus a uniform
sample of older ones. `train_model` holds out the newest `holdout_fraction` of them; the current
production version is scored on exactly those holdout rows, encoded with its own feature specs
(as the worker encodes them), and the candidate is registered as a "candidate" only when it is
no worse than production on `RetrainConfig.metric` by more than `margin`. Nothing is promoted
here: promotion stays a separate, deliberate step (shadow, canary, promote).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from feature_store.warmup import Warmup
from inference.metadata import ModelVersion, VersionInputs, check_model_name
from inference.registry import ModelRegistry
from inference.training import (
    Estimator,
    _epoch_seconds,
    _labels,
    evaluate,
    register_trained,
    time_split,
    train_model,
)

Metric = Literal["log_loss", "accuracy", "auc"]
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss"})


class RetrainConfig(BaseModel):
    """Which rows to train on and how a candidate must compare with production to be registered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimator: Estimator = "logreg"
    recent_rows: int = Field(20_000, ge=1)  # the newest labeled rows by event time
    older_share: float = Field(0.0, ge=0.0)  # older rows added, as a fraction of recent_rows
    min_rows: int = Field(1_000, ge=2)  # fewer selected rows -> no training
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # the newest rows, by event time
    metric: Metric = "log_loss"
    margin: float = Field(0.0, ge=0.0)  # how much worse than production the candidate may be
    seed: int = Field(0, ge=0)


class RetrainResult(BaseModel):
    """What a retraining run did; `rows` counts every selected row (training and holdout)."""

    model_config = ConfigDict(extra="forbid")

    registered: bool
    candidate_version: int | None
    production_version: int | None
    candidate_metrics: dict[str, float]
    production_metrics: dict[str, float] | None
    rows: int
    holdout_rows: int
    data_start: datetime | None
    data_end: datetime | None
    reason: str


def select_rows(ts: np.ndarray, config: RetrainConfig) -> np.ndarray:
    """Ascending indices of the rows to train on: the newest `recent_rows` by `ts` (stable on
    ties), plus ``round(older_share * recent_rows)`` rows sampled uniformly from the older ones."""
    secs = _epoch_seconds(np.asarray(ts))
    order = np.argsort(secs, kind="stable")
    n_recent = min(config.recent_rows, order.size)
    recent, older = order[order.size - n_recent :], order[: order.size - n_recent]
    n_older = min(round(config.older_share * config.recent_rows), older.size)
    if n_older:
        rng = np.random.default_rng(config.seed)
        recent = np.concatenate([recent, rng.choice(older, size=n_older, replace=False)])
    return np.sort(recent)


class RowWindow:
    """The rows `select_rows` picks, kept while rows stream in, in memory bounded by the window.

    Rows arrive in chunks (`add`); it keeps the newest ``recent_rows`` by ``(ts, arrival)`` (the
    order `select_rows`' stable sort gives) and, among the others, the ``round(older_share *
    recent_rows)`` with the smallest random keys drawn at arrival: a uniform sample without
    replacement of the older rows. A row pushed out of the newest ones can never come back (only
    newer rows arrive), so each decision is final and nothing else needs keeping. `rows` returns
    them in arrival order; `select_rows` on them picks them all.

    >>> w = RowWindow(RetrainConfig(recent_rows=2, older_share=0.5))
    >>> w.add(np.array([5.0, 1.0, 7.0]), {"x": np.array([50, 10, 70])})
    >>> w.add(np.array([6.0, 2.0]), {"x": np.array([60, 20])})
    >>> ts, cols = w.rows()  # the newest two (7, 6) and one of the three older, in arrival order
    >>> sorted(ts.tolist())[-2:], len(ts), cols["x"].tolist() == (ts * 10).astype(int).tolist()
    ([6.0, 7.0], 3, True)
    """

    def __init__(self, config: RetrainConfig) -> None:
        self.n_recent = config.recent_rows
        self.n_older = round(config.older_share * config.recent_rows)
        self._rng = np.random.default_rng(config.seed)
        self._arrived = 0
        self._recent: dict[str, np.ndarray] | None = None  # columns + "~ts", "~seq", "~key"
        self._older: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return sum(len(part["~ts"]) for part in (self._recent, self._older) if part is not None)

    def add(self, ts: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Offer rows (event times in epoch seconds or datetime64, and their columns)."""
        n = len(ts)
        if n == 0:
            return
        new = {
            **{k: np.asarray(v) for k, v in columns.items()},
            "~ts": _epoch_seconds(np.asarray(ts)),
            "~seq": np.arange(self._arrived, self._arrived + n, dtype=np.int64),
            "~key": self._rng.random(n),
        }
        self._arrived += n
        rows = _stack(self._recent, new)
        order = np.lexsort((rows["~seq"], rows["~ts"]))
        cut = max(order.size - self.n_recent, 0)
        self._recent = _take(rows, order[cut:])
        if self.n_older and cut:
            older = _stack(self._older, _take(rows, order[:cut]))
            keep = np.argsort(older["~key"], kind="stable")[: self.n_older]
            self._older = _take(older, keep)

    def rows(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Event times (epoch seconds) and columns of the kept rows, in arrival order."""
        parts = [p for p in (self._recent, self._older) if p is not None]
        if not parts:
            return np.zeros(0), {}
        rows = parts[0] if len(parts) == 1 else _stack(parts[0], parts[1])
        rows = _take(rows, np.argsort(rows["~seq"], kind="stable"))
        return rows["~ts"], {k: v for k, v in rows.items() if k not in _WINDOW_KEYS}


_WINDOW_KEYS = frozenset({"~ts", "~seq", "~key"})


def _stack(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if a is None:
        return b
    if set(a) != set(b):
        raise ValueError(f"rows with different columns: {sorted(set(a) ^ set(b))}")
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _take(rows: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in rows.items()}


def _check_inputs(
    numeric: Mapping[str, np.ndarray], categorical: Mapping[str, np.ndarray], n: int, n_ts: int
) -> None:
    clash = set(numeric) & set(categorical)
    if clash:
        raise ValueError(f"features both numeric and categorical: {sorted(clash)}")
    if not numeric and not categorical:
        raise ValueError("no features given")
    for feature, col in {**numeric, **categorical}.items():
        if len(col) != n:
            raise ValueError(f"feature {feature!r} has {len(col)} values, labels have {n}")
    if n_ts != n:
        raise ValueError(f"ts has {n_ts} values, labels have {n}")


def _not_comparable(
    production: ModelVersion,
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, np.ndarray],
    boolean: Mapping[str, np.ndarray],
) -> list[str]:
    """Production features the data lacks (or has as the other kind): scoring them as all-missing
    would make production look worse than it is, so such a comparison means nothing."""
    columns = {"numeric": numeric, "categorical": categorical, "boolean": boolean}
    return [f.name for f in production.features if f.name not in columns[f.kind]]


def _span(secs: np.ndarray) -> tuple[datetime | None, datetime | None]:
    if secs.size == 0:
        return None, None
    return datetime.fromtimestamp(float(secs.min()), UTC), datetime.fromtimestamp(float(secs.max()), UTC)


def _classes(y: np.ndarray) -> str:
    return f"{int(y.sum()):,} positive of {y.size:,}"


def retrain(
    registry: ModelRegistry,
    name: str,
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, np.ndarray],
    labels: np.ndarray,
    ts: np.ndarray,
    config: RetrainConfig = RetrainConfig(),  # frozen: a shared default is safe
    source: str = "",
    boolean: Mapping[str, np.ndarray] | None = None,
    inputs: VersionInputs | None = None,
    warmup: Warmup | None = None,
) -> RetrainResult:
    """Train a candidate for `name` on the rows `config` selects; register it (stage "candidate")
    unless it is worse than the production version on the same holdout rows.

    Raises ValueError for inconsistent inputs; too few rows or a single class in the training or
    holdout rows return ``registered=False`` with the reason. `inputs` (the production
    version's feature view and input contract) is registered with the candidate.
    """
    check_model_name(name)
    y_all = _labels(labels)
    secs_all = _epoch_seconds(np.asarray(ts))
    _check_inputs(numeric, categorical, y_all.size, secs_all.size)

    sel = select_rows(secs_all, config)
    y, secs = y_all[sel], secs_all[sel]
    sub_numeric = {k: np.asarray(v)[sel] for k, v in numeric.items()}
    sub_categorical = {k: np.asarray(v)[sel] for k, v in categorical.items()}
    sub_boolean = {k: np.asarray(v)[sel] for k, v in (boolean or {}).items()}
    start, end = _span(secs)
    production = registry.deployment(name).production
    prod_version = production.version if production is not None else None

    def skipped(holdout_rows: int, reason: str) -> RetrainResult:
        return RetrainResult(
            registered=False,
            candidate_version=None,
            production_version=prod_version,
            candidate_metrics={},
            production_metrics=None,
            rows=int(sel.size),
            holdout_rows=holdout_rows,
            data_start=start,
            data_end=end,
            reason=reason,
        )

    if sel.size < config.min_rows:
        return skipped(
            0, f"not retrained: {sel.size:,} labeled rows selected, fewer than min_rows={config.min_rows:,}."
        )
    train_idx, hold_idx = time_split(sel.size, config.holdout_fraction, secs)
    for part, idx in (("training", train_idx), ("holdout", hold_idx)):
        if np.unique(y[idx]).size < 2:
            return skipped(
                int(hold_idx.size),
                f"not retrained: the {part} rows hold a single class ({_classes(y[idx])}), "
                "so a candidate could not be trained or compared.",
            )

    trained = train_model(
        sub_numeric,
        sub_categorical,
        y,
        secs,
        estimator=config.estimator,
        holdout_fraction=config.holdout_fraction,
        seed=config.seed,
        source=source,
        boolean=sub_boolean,
        warmup=warmup,
    )
    if trained.training.holdout_rows != hold_idx.size:  # the shared split must agree with training
        raise RuntimeError(
            f"holdout mismatch: train_model held out {trained.training.holdout_rows} rows, expected "
            f"{hold_idx.size}"
        )
    candidate_metrics = dict(trained.training.metrics)
    cand = candidate_metrics[config.metric]
    metric = config.metric

    production_metrics: dict[str, float] | None = None

    def outcome(version: int | None, reason: str) -> RetrainResult:
        return RetrainResult(
            registered=version is not None,
            candidate_version=version,
            production_version=prod_version,
            candidate_metrics=candidate_metrics,
            production_metrics=production_metrics,
            rows=int(sel.size),
            holdout_rows=int(hold_idx.size),
            data_start=start,
            data_end=end,
            reason=reason,
        )

    if production is None:
        verdict = f"model {name!r} has no production version to compare with"
    elif missing := _not_comparable(production, sub_numeric, sub_categorical, sub_boolean):
        verdict = (
            f"production {production.ref} is not comparable: the data lacks its feature(s) "
            f"{', '.join(missing)} (candidate {metric} {cand:.4f} on {hold_idx.size:,} holdout rows)"
        )
    else:
        _, session = registry.load(name, production.version)
        production_metrics = evaluate(
            session,
            {k: v[hold_idx] for k, v in sub_numeric.items()},
            {
                **{k: v[hold_idx] for k, v in sub_categorical.items()},
                **{k: v[hold_idx] for k, v in sub_boolean.items()},
            },
            y[hold_idx],
        )
        prod = production_metrics[metric]
        worse_by = cand - prod if metric in LOWER_IS_BETTER else prod - cand
        comparison = (
            f"candidate {metric} {cand:.4f} vs production {production.ref} {prod:.4f} on the same "
            f"{hold_idx.size:,} holdout rows"
        )
        if worse_by > config.margin:
            return outcome(
                None,
                f"not registered: {comparison}, worse by {worse_by:.4f} "
                f"(more than the margin {config.margin:.4f}).",
            )
        verdict = (
            f"{comparison}, better by {-worse_by:.4f}"
            if worse_by <= 0
            else f"{comparison}, worse by {worse_by:.4f} but within the margin {config.margin:.4f}"
        )

    mv = register_trained(registry, name, trained, "candidate", inputs=inputs)
    return outcome(mv.version, f"registered {mv.ref} as candidate: {verdict}.")
