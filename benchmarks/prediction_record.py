"""The prediction record the baselines write: the same fields as the Driftline worker's."""

from __future__ import annotations

import time
from typing import Any

from inference.metadata import ModelVersion
from stream.events import RawEvent


def prediction_record(
    event: RawEvent, meta: ModelVersion, score: float, started: float, partition: int, offset: int
) -> dict[str, Any]:
    """One served production prediction (``started``: `time.perf_counter` when scoring began)."""
    return {
        "event_id": event.event_id,
        "entity_id": event.entity_id,
        "ts": event.ts,
        "model": meta.name,
        "version": meta.version,
        "arm": "production",
        "score": score,
        "predicted": int(score >= meta.threshold),
        "served": True,
        "shadow": False,
        "processing_ms": round((time.perf_counter() - started) * 1000, 3),
        "source_partition": partition,
        "source_offset": offset,
    }
