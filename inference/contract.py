"""A model version's input contract: which raw event fields it reads, of which kind.

Kinds are the JSON types of the values: ``numeric`` (a number), ``categorical`` (a string),
``boolean`` (true/false); ``null`` or an absent field is *missing*. Nothing is coerced: ``"12.5"``
for a numeric input is a wrong type, not 12.5, and ``1`` for a boolean input is one too.

>>> raw = [RawInput(name="amount", kind="numeric"), RawInput(name="vip", kind="boolean")]
>>> check = check_inputs(raw, [{"amount": 3.5, "vip": True}, {"amount": "12.5", "x": 1}, {"vip": 1}])
>>> check.wrong_type, check.missing, check.unknown
({'amount': [1], 'vip': [2]}, {'vip': 1, 'amount': 1}, {'x': 1})
>>> infer_kind([1, 2.5, None]), infer_kind([True, None]), infer_kind(["a", None]), infer_kind([None])
('numeric', 'boolean', 'categorical', None)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from inference.metadata import FeatureKind, RawInput

# One feature value on the wire (events, the HTTP API). Strict: "1" stays a string, true stays a
# boolean (never 1), NaN/infinity are refused (send null). All checks run inside pydantic-core.
FeatureValue = StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr | None

_KIND_OF_TYPE: dict[type, FeatureKind] = {
    bool: "boolean",
    int: "numeric",
    float: "numeric",
    str: "categorical",
}
EXPECTED = {"numeric": "a number", "categorical": "a category string", "boolean": "true or false"}


def kind_of(value: object) -> FeatureKind | None:
    """The kind of one raw value (None for null; ValueError for a type no kind has)."""
    if value is None:
        return None
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is None:
        raise ValueError(f"{type(value).__name__} is not a feature value")
    return kind


def describe_value(value: object) -> str:
    """``a string``, ``a number``, ``a boolean``: what a value is, for error messages."""
    names = {"categorical": "a string", "numeric": "a number", "boolean": "a boolean"}
    kind = _KIND_OF_TYPE.get(type(value))
    return names[kind] if kind else type(value).__name__


def wrong_type_reason(name: str, expected: str, value: object, ref: str) -> str:
    """``features.amount: fraud:3 expects a number (numeric), got a string``."""
    return f"features.{name}: {ref} expects {EXPECTED[expected]} ({expected}), got {describe_value(value)}"


class KindConflict(ValueError):
    """A field whose values have more than one kind."""


def infer_kind(values: Iterable[object]) -> FeatureKind | None:
    """The one kind of a column's present values (None: no value present); KindConflict on a mix."""
    kinds = {kind_of(v) for v in values} - {None}
    if len(kinds) > 1:
        raise KindConflict(f"mixes {' and '.join(sorted(k for k in kinds if k))} values")
    return next(iter(kinds), None)


def column_kinds(
    rows: Sequence[Mapping[str, object]], names: Iterable[str]
) -> Iterator[tuple[str, list[object], FeatureKind | None]]:
    """(name, its values in every row (None where absent), their kind) per name; KindConflict
    naming the feature on a mix."""
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            kind = infer_kind(values)
        except KindConflict as exc:
            raise KindConflict(f"feature {name!r} {exc}") from None
        yield name, values, kind


def raw_inputs(rows: Sequence[Mapping[str, object]], names: Iterable[str]) -> list[RawInput]:
    """The contract of `names` as these training events have them: kind and missing share.

    A field with no value in any row is left out (the caller decides whether that is an error).
    """
    out = []
    n = max(len(rows), 1)
    for name, values, kind in column_kinds(rows, names):
        if kind is not None:
            missing = sum(v is None for v in values) / n
            out.append(RawInput(name=name, kind=kind, missing_share=round(missing, 6)))
    return out


@dataclass
class InputCheck:
    """What one batch did against a contract: rows with a wrong-typed input (by feature), how many
    events lacked each input, and how many had each field the contract does not know."""

    wrong_type: dict[str, list[int]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)

    def wrong_rows(self) -> dict[int, str]:
        """Row -> its first wrong-typed feature (in contract order), for dead letters."""
        first: dict[int, str] = {}
        for name, rows in self.wrong_type.items():
            for i in rows:
                first.setdefault(i, name)
        return first


def check_inputs(
    raw: Sequence[RawInput], rows: Sequence[Mapping[str, object]], known: Iterable[str] = ()
) -> InputCheck:
    """Check each event's fields against the contract. `known`: more field names that are not
    unknown (e.g. a label column the producer also sends)."""
    expected = {r.name: r.kind for r in raw}
    known_names = set(expected) | set(known)
    check = InputCheck()
    kind_of_type = _KIND_OF_TYPE
    for i, row in enumerate(rows):
        for name, kind in expected.items():
            value = row.get(name)
            if value is None:
                check.missing[name] = check.missing.get(name, 0) + 1
            elif kind_of_type.get(type(value)) != kind:
                check.wrong_type.setdefault(name, []).append(i)
        if not row.keys() <= known_names:
            for name in row.keys() - known_names:
                check.unknown[name] = check.unknown.get(name, 0) + 1
    return check
