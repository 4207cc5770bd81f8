"""Dead letters: an input the worker cannot process, kept with why and where it came from.

A dead letter is never dropped: it goes to ``<prefix>.dlq`` as JSON, keyed like the original
message, with the original bytes (base64, plus the text when it is UTF-8), so it can be
inspected with ``driftline tail dlq`` and replayed after a fix.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel


class DeadLetter(BaseModel):
    reason: str  # one line, human readable
    reason_code: str  # stable and low-cardinality: the metrics label
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None
    original_b64: str
    original_text: str | None
    worker: str
    ts: datetime

    @classmethod
    def of(
        cls,
        reason: str,
        reason_code: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        worker: str,
    ) -> DeadLetter:
        raw = value or b""
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return cls(
            reason=reason,
            reason_code=reason_code,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            key=key.decode("utf-8", errors="replace") if key is not None else None,
            original_b64=base64.b64encode(raw).decode(),
            original_text=text,
            worker=worker,
            ts=datetime.now(UTC),
        )

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))
