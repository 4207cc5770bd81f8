"""Dead letters: an input the worker cannot process, kept with why and where it came from.

A dead letter is never dropped: it goes to ``<prefix>.dlq`` as JSON, keyed like the original
message. It keeps the original once: as text when it is UTF-8 (readable in ``driftline tail
dlq``), else base64 (``original_encoding``), and only its first ``keep`` bytes
(`DEFAULT_KEEP_BYTES`); ``original_size`` and ``original_sha256`` describe the whole of it, and
the source topic/partition/offset is where to fetch the rest for a replay. So a dead letter is
bounded (at most about 4/3 of ``keep`` plus 8 kB, whatever the input), always far below the
broker's message limit: an oversized poison message can never make its own dead letter
unproducible.

>>> d = DeadLetter.of("bad", "invalid_json", "t", 0, 7, b"k", b"x" * 10, "w", keep=4)
>>> d.original(), d.original_size, d.original_truncated, d.original_encoding
(b'xxxx', 10, True, 'utf-8')
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel

DEFAULT_KEEP_BYTES = 64 * 1024  # of the original, per dead letter
MAX_KEEP_BYTES = 256 * 1024  # a setting above this could approach the broker's 1 MB limit
MAX_KEY_BYTES = 1024  # of the original message key
MAX_REASON_CHARS = 1000  # a reason quotes input (e.g. a feature name): bounded too


class DeadLetter(BaseModel):
    reason: str  # one line, human readable
    reason_code: str  # stable and low-cardinality: the metrics label
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None  # the original key (its first MAX_KEY_BYTES bytes)
    original_kept: str | None  # the kept prefix of the original value (None: the value was null)
    original_encoding: Literal["utf-8", "base64"] | None
    original_size: int  # bytes of the whole original value (0 when null)
    original_sha256: str  # of the whole original value
    original_truncated: bool
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
        keep: int = DEFAULT_KEEP_BYTES,
    ) -> DeadLetter:
        raw = value or b""
        kept = raw[:keep]
        original, encoding = _encode(kept) if value is not None else (None, None)
        reason = " ".join(reason.split())  # one line
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        return cls(
            reason=reason,
            reason_code=reason_code,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            key=key[:MAX_KEY_BYTES].decode("utf-8", errors="replace") if key is not None else None,
            original_kept=original,
            original_encoding=encoding,
            original_size=len(raw),
            original_sha256=hashlib.sha256(raw).hexdigest(),
            original_truncated=len(kept) < len(raw),
            worker=worker,
            ts=datetime.now(UTC),
        )

    def original(self) -> bytes:
        """The kept prefix of the original value (all of it unless ``original_truncated``)."""
        if self.original_kept is None:
            return b""
        if self.original_encoding == "base64":
            return base64.b64decode(self.original_kept)
        return self.original_kept.encode("utf-8")

    @property
    def original_b64(self) -> str:
        """The kept original as base64, whatever its encoding in the letter."""
        return base64.b64encode(self.original()).decode()

    def without_original(self, why: str) -> DeadLetter:
        """The same letter keeping none of the original (size and sha256 still say what it was)."""
        return self.model_copy(
            update={
                "original_kept": None if self.original_kept is None else "",
                "original_truncated": self.original_size > 0,
                "reason": f"{self.reason} [original not kept: {why}]"[: MAX_REASON_CHARS + 100],
            }
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def _encode(kept: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Text when ``kept`` is UTF-8 (a cut multi-byte character at the end is dropped) and JSON
    escaping does not blow it up (control characters: 6 bytes each), else base64."""
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(kept) - 3 or exc.reason != "unexpected end of data":
            return base64.b64encode(kept).decode(), "base64"
        text = kept[: exc.start].decode("utf-8")
    if len(orjson.dumps(text)) > len(kept) * 4 // 3 + 8:
        return base64.b64encode(kept).decode(), "base64"
    return text, "utf-8"
