"""Where the worker's time goes: every stage of `Worker.process`, timed inside real batches.

Used by ``benchmarks/worker_throughput.py``. A worker built as ``driftline worker`` builds it
processes fresh events of its own topic prefix, batch by batch (`Worker.process`: decode, the
input contract, the feature store, scoring, the drift detectors, the prediction records, produce
+ flush + commit), with a stopwatch around each stage's function; a stage's figure is its own
time (its timed sub-stages are listed under it and not counted twice), in µs per event, over the
timed batches (the first batches are warm-up, not counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

import stream.drift as drift_module
import stream.worker as worker_module
from detectors.adwin import AdwinDetector
from detectors.cusum import CusumDetector
from detectors.policy_store import SharedAlertPolicy
from detectors.window_store import WindowStore
from feature_store.engine import Engine
from feature_store.online import OnlineStore
from stream.drift import DriftStage
from stream.outputs import BatchOutputs
from stream.scoring import Scorer
from stream.worker import Worker

# (label, owner, attribute, parent label): the owner's attribute is wrapped while timing.
STAGES: list[tuple[str, Any, str, str | None]] = [
    ("decode_batch (pydantic model_validate_json)", worker_module, "decode_batch", None),
    ("feature store, total", worker_module, "feature_columns", None),
    ("  read: WATCH + watermarks + states (round trip 1)", OnlineStore, "_read", "feature store, total"),
    ("  decode states", Engine, "decode", "feature store, total"),
    ("  engine (tiles, windows)", Engine, "run", "feature store, total"),
    ("  write: MULTI ... EXEC (round trip 2)", OnlineStore, "_commit", "feature store, total"),
    ("scoring (encode + ONNX Runtime)", Scorer, "score", None),
    ("drift detectors, total", DriftStage, "observe", None),
    ("  merged windows: add (Lua, 1 round trip)", WindowStore, "add", "drift detectors, total"),
    ("  merged windows: close_ready", WindowStore, "close_ready", "drift detectors, total"),
    ("  ADWIN (score, per partition)", AdwinDetector, "update", "drift detectors, total"),
    ("  CUSUM (13 streams per partition, one by one)", CusumDetector, "update", "drift detectors, total"),
    (
        "  CUSUM (13 streams x partitions, one stacked pass)",
        drift_module,
        "update_many",
        "drift detectors, total",
    ),
    ("  alert policy (shared, Redis)", SharedAlertPolicy, "decide", "drift detectors, total"),
    ("  latest/history of closed windows", DriftStage, "_record_latest", "drift detectors, total"),
    ("ADWIN/CUSUM checkpoint (1 round trip)", DriftStage, "checkpoint", None),
    ("produce + flush + commit", BatchOutputs, "deliver", None),
    ("windows published", DriftStage, "published", None),
]
PREDICT = "prediction records (dict + orjson + Output)"


@dataclass
class Stopwatch:
    """Seconds spent per label, own and including children (wrappers nest)."""

    total: dict[str, float] = field(default_factory=dict)
    active: bool = False

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[label] = self.total.get(label, 0.0) + time.perf_counter() - started

        return timed


@contextmanager
def stopwatch(worker: Worker) -> Iterator[Stopwatch]:
    """Wrap every stage (and the worker's `_predict`) for the duration of the block."""
    watch = Stopwatch()
    saved: list[tuple[Any, str, Any]] = []
    for label, owner, attr, _ in STAGES:
        if not hasattr(owner, attr):  # e.g. an older checkout measured with this script
            continue
        saved.append((owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)))
        setattr(owner, attr, watch.wrap(label, getattr(owner, attr)))
    worker._predict = watch.wrap(PREDICT, worker._predict)  # type: ignore[method-assign]
    try:
        yield watch
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
        del worker._predict


def breakdown(
    worker: Worker, batches: list[list[Message]], warmup: int
) -> tuple[list[tuple[str, float]], float]:
    """Process `batches` with `worker` (its scorer and drift partitions set up); per stage µs/event
    over the batches after the first `warmup`, and the measured process() µs/event."""
    with stopwatch(worker) as watch:
        events, wall = 0, 0.0
        for k, msgs in enumerate(batches):
            watch.active = k >= warmup
            started = time.perf_counter()
            worker.process(msgs)
            if watch.active:
                wall += time.perf_counter() - started
                events += len(msgs)
    spent = watch.total
    per = {label: 1e6 * s / max(events, 1) for label, s in spent.items()}
    children: dict[str, float] = {}
    for label, _, _, parent in STAGES:
        if parent is not None:
            children[parent] = children.get(parent, 0.0) + per.get(label, 0.0)
    # _predict holds scoring and the detectors: its own time is the prediction records.
    inside_predict = per.get("scoring (encode + ONNX Runtime)", 0.0) + per.get("drift detectors, total", 0.0)
    rows: list[tuple[str, float]] = []
    for label, _, _, parent in STAGES:
        if parent is not None:
            continue
        us = per.get(label, 0.0)
        rows.append((label, us))
        if label in children:
            rows += [(child, per.get(child, 0.0)) for child, _, _, up in STAGES if up == label]
            rows.append(("  other (batch prep, conversions, metrics)", us - children[label]))
        if label == "drift detectors, total":
            rows.append((PREDICT, per.get(PREDICT, 0.0) - inside_predict))
    accounted = sum(us for label, us in rows if not label.startswith("  "))
    rows.append(
        ("rest of process() (input contract, offsets, metrics)", 1e6 * wall / max(events, 1) - accounted)
    )
    return rows, 1e6 * wall / max(events, 1)
