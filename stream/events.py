"""The event contract: what producers write to ``<prefix>.events`` and ``<prefix>.labels``.

JSON on the wire (orjson), message key = ``entity_id`` for events, ``event_id`` for labels.

>>> e = RawEvent.model_validate_json(
...     b'{"event_id": "e1", "entity_id": "card-7", "ts": "2026-01-01T00:00:00Z",'
...     b' "features": {"amount": 12.5, "country": "DE", "device": null}}'
... )
>>> e.features["amount"], e.ts.year
(12.5, 2026)
>>> decode_event(encode_event(e)) == e
True
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

# The values of `features` (strict: "1" stays a string, true a boolean, NaN is refused; all checks
# inside pydantic-core, no Python callback per event on the worker's hot path).
from inference.contract import FeatureValue

NonEmptyStr = Annotated[str, StringConstraints(min_length=1, max_length=256)]

SCHEMA_VERSION = 1


class RawEvent(BaseModel):
    """One raw event: an entity did something at event time ``ts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: NonEmptyStr
    entity_id: NonEmptyStr
    ts: datetime
    features: dict[NonEmptyStr, FeatureValue]
    schema_version: int = SCHEMA_VERSION

    @field_validator("ts")
    @classmethod
    def _aware_utc(cls, ts: datetime) -> datetime:
        # Naive timestamps are taken as UTC so that event time is never ambiguous.
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class LabelEvent(BaseModel):
    """The true outcome of an earlier event, joined to its prediction by ``event_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: NonEmptyStr
    label: int | float | str
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("ts")
    @classmethod
    def _aware_utc(cls, ts: datetime) -> datetime:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def explain(exc: ValidationError) -> tuple[str, str]:
    """(one-line reason, stable reason code) of a failed event validation.

    >>> explain(pydantic_error(b'{"event_id":"e","entity_id":"x","ts":"2026-01-01","features":{"a":[1]}}'))
    ('features.a: must be a number, a boolean, a string or null, not list', 'schema_feature_type')
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "json_invalid":
        return f"{first['msg']}{more}", "invalid_json"
    if len(loc) == 3 and loc[0] == "features":  # one error per union member: say it once
        value = first["input"]
        distinct = {tuple(str(p) for p in e["loc"][:2]) for e in errors}
        more = f" (+{len(distinct) - 1} more)" if len(distinct) > 1 else ""
        if isinstance(value, float):
            why = "NaN and infinity are not allowed, send null"
        else:
            why = f"must be a number, a boolean, a string or null, not {type(value).__name__}"
        return f"features.{loc[1]}: {why}{more}", "schema_feature_type"
    where = ".".join(loc)
    return f"{where + ': ' if where else ''}{first['msg']}{more}", f"schema_{first['type']}"


def pydantic_error(data: bytes) -> ValidationError:
    """The validation error of an invalid raw event (for docs and tests)."""
    try:
        RawEvent.model_validate_json(data)
    except ValidationError as exc:
        return exc
    raise ValueError("the event is valid")


def _default(obj: Any) -> Any:
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def encode_event(event: RawEvent | LabelEvent) -> bytes:
    """Serialise to compact JSON bytes (timestamps as RFC 3339 with ``Z``)."""
    return orjson.dumps(event.model_dump(mode="python"), option=orjson.OPT_UTC_Z, default=_default)


def decode_event(data: bytes | str) -> RawEvent:
    """Parse and validate one raw event; raises ``pydantic.ValidationError`` on bad input."""
    return RawEvent.model_validate_json(data)


def decode_label(data: bytes | str) -> LabelEvent:
    return LabelEvent.model_validate_json(data)
