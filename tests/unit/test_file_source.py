from __future__ import annotations

from pathlib import Path

import pytest

from stream.file_source import FileFormatError, FileRecord, read_events, validate_file


def _records(path: Path, label_field: str | None = None) -> list[FileRecord]:
    out = []
    for item in read_events(path, label_field):
        assert not isinstance(item, FileFormatError), item
        out.append(item)
    return out


def test_jsonl_contract_and_flat_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"event_id":"a","entity_id":"u1","ts":"2026-01-01T00:00:00Z","features":{"x":1.5,"is_fraud":1}}\n'
        "\n"
        '{"entity_id":"u2","ts":"2026-01-01T00:00:01Z","x":2,"city":"Oslo","is_fraud":0}\n'
    )
    first, second = _records(path, label_field="is_fraud")
    assert first.event.event_id == "a" and first.event.features == {"x": 1.5}
    assert first.label is not None and first.label.label == 1
    assert second.line == 3 and second.event.event_id == "events.jsonl:3"
    assert second.event.features == {"x": 2, "city": "Oslo"}
    assert second.label is not None and second.label.event_id == "events.jsonl:3"


def test_csv_types_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("entity_id,ts,amount,count,country,note\nu1,2026-01-01T00:00:00Z,9.5,3,DE,\n")
    (record,) = _records(path)
    assert record.line == 2
    assert record.event.entity_id == "u1"
    assert record.event.features == {"amount": 9.5, "count": 3, "country": "DE", "note": None}


@pytest.mark.parametrize(
    ("content", "suffix", "line", "reason"),
    [
        (
            '{"entity_id":"u","ts":"2026-01-01T00:00:00Z","x":1}\n{oops\n',
            ".jsonl",
            2,
            "not valid JSON",
        ),
        ('{"entity_id":"u","ts":"2026-01-01T00:00:00Z"}\n[1, 2]\n', ".jsonl", 2, "JSON object"),
        (
            '{"entity_id":"u","ts":"2026-01-01T00:00:00Z"}\n\n{"entity_id":"u","ts":"soon"}\n',
            ".jsonl",
            3,
            "ts",
        ),
        ('{"ts":"2026-01-01T00:00:00Z","x":1}\n', ".jsonl", 1, "entity_id"),
        (
            "entity_id,ts,x\nu,2026-01-01T00:00:00Z,1\nu,2026-01-01T00:00:00Z\n",
            ".csv",
            3,
            "columns",
        ),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, content: str, suffix: str, line: int, reason: str) -> None:
    path = tmp_path / f"events{suffix}"
    path.write_text(content)
    good, bad, errors = validate_file(path)
    assert bad == 1 and good >= 0
    assert errors[0].line == line
    assert reason in errors[0].reason
    assert f"{path}:{line}:" in str(errors[0])


def test_missing_label_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"entity_id":"u","ts":"2026-01-01T00:00:00Z","x":1}\n')
    _, bad, errors = validate_file(path, label_field="y")
    assert bad == 1 and "label field 'y' is missing" in errors[0].reason


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_events(Path("/nonexistent/events.jsonl")))
