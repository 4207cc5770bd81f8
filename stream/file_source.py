"""Reading users' events from JSONL or CSV files, with errors that name the line.

A JSONL line is either the full contract (``{"event_id", "entity_id", "ts", "features"}``) or a
flat object whose keys other than ``event_id``/``entity_id``/``ts`` are the features. A CSV file
has a header row with ``entity_id`` and ``ts`` columns (``event_id`` optional); every other
column is a feature, numbers are parsed as numbers, ``true``/``false`` (any of true, True, TRUE)
as booleans and empty cells as null. A missing
``event_id`` becomes ``<file name>:<line>``, so re-sending a file reuses the same ids.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from stream.events import LabelEvent, RawEvent, explain

RESERVED = ("event_id", "entity_id", "ts", "schema_version")


class FileFormatError(ValueError):
    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass(frozen=True)
class FileRecord:
    line: int
    event: RawEvent
    label: LabelEvent | None


_BOOLEANS = {"true": True, "false": False, "True": True, "False": False, "TRUE": True, "FALSE": False}
LABEL_LIKE = frozenset({"label", "labels", "target", "y", "class", "outcome", "is_fraud", "fraud"})


def label_hint(names: Iterable[str], label_field: str | None) -> str | None:
    """A hint when a field looks like a label but is not the one named with --label-field.

    >>> label_hint(["amount", "label"], None)
    "field 'label' looks like a label: pass --label-field label to send it as one"
    """
    for name in names:
        if name != label_field and (name.lower() in LABEL_LIKE or "label" in name.lower()):
            return f"field {name!r} looks like a label: pass --label-field {name} to send it as one"
    return None


def _number_or_text(cell: str) -> float | int | bool | str | None:
    """A CSV cell: empty -> null, true/false -> a boolean, a number -> the number, else text."""
    if cell == "":
        return None
    if cell in _BOOLEANS:
        return _BOOLEANS[cell]
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell


def _to_record(path: Path, line: int, raw: dict[str, Any], label_field: str | None) -> FileRecord:
    label_value = raw.pop(label_field, None) if label_field else None
    if "features" not in raw:
        features = {k: v for k, v in raw.items() if k not in RESERVED}
        raw = {k: v for k, v in raw.items() if k in RESERVED} | {"features": features}
    elif label_field and isinstance(raw["features"], dict):
        raw["features"] = dict(raw["features"])
        label_value = raw["features"].pop(label_field, label_value)
    raw.setdefault("event_id", f"{path.name}:{line}")
    try:
        event = RawEvent.model_validate(raw)
        label = None
        if label_field is not None:
            if label_value is None:
                raise FileFormatError(path, line, f"label field {label_field!r} is missing")
            label = LabelEvent(event_id=event.event_id, label=label_value, ts=event.ts)
    except ValidationError as exc:
        reason = explain(exc)[0]
        extra = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
        hint = label_hint(extra, label_field)
        raise FileFormatError(path, line, f"{reason} ({hint})" if hint else reason) from None
    return FileRecord(line, event, label)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | FileFormatError]]:
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield line_no, FileFormatError(path, line_no, f"not valid JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                yield line_no, FileFormatError(path, line_no, "expected a JSON object")
                continue
            yield line_no, obj


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | FileFormatError]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            line_no = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                yield (
                    line_no,
                    FileFormatError(path, line_no, f"expected {len(header)} columns, got {len(row)}"),
                )
                continue
            yield (
                line_no,
                {
                    name: cell if name in RESERVED else _number_or_text(cell)
                    for name, cell in zip(header, row, strict=True)
                },
            )


def read_events(path: Path, label_field: str | None = None) -> Iterator[FileRecord | FileFormatError]:
    """Yield a record per data line, or the error that line has (the caller decides)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    for line_no, row in rows:
        if isinstance(row, FileFormatError):
            yield row
            continue
        try:
            yield _to_record(path, line_no, row, label_field)
        except FileFormatError as exc:
            yield exc


def validate_file(
    path: Path, label_field: str | None = None, keep: int = 5
) -> tuple[int, int, list[FileFormatError]]:
    """Validate a whole file: (good records, bad lines, the first ``keep`` errors)."""
    good, bad = 0, 0
    errors: list[FileFormatError] = []
    for item in read_events(path, label_field):
        if isinstance(item, FileFormatError):
            bad += 1
            if len(errors) < keep:
                errors.append(item)
        else:
            good += 1
    return good, bad, errors
