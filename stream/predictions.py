"""The prediction record the worker writes to ``<prefix>.predictions`` (key = ``entity_id``).

One served prediction per event. A shadow version's prediction for the same event is a second
record with ``shadow: true`` and ``served: false``; consumers that want what users were served
filter on ``served``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

Arm = Literal["production", "canary", "shadow"]


class Prediction(BaseModel):
    event_id: str
    entity_id: str
    ts: datetime  # the event's own time
    model: str
    version: int
    arm: Arm
    score: float
    predicted: int
    served: bool
    shadow: bool
    processing_ms: float  # from the batch leaving Kafka to this prediction being built
    source_partition: int
    source_offset: int
    features: dict[str, Any] | None = None  # the model inputs, when the worker is asked to attach them
