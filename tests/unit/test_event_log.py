from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from feature_store.definitions import fraud_feature_view
from feature_store.historical import get_historical_features, replay
from stream.event_log import read_file_log
from stream.file_source import FileFormatError
from stream.synthetic import FraudGenerator


def test_a_jsonl_export_replays_into_point_in_time_features(tmp_path: Path) -> None:
    batch = FraudGenerator(seed=1, entities=20, start_ts=1.7e9).batch(0, 400)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in batch.event_dicts()))
    log = list(read_file_log(path))
    assert [e.offset for e in log[:3]] == [1, 2, 3] and len(log) == 400
    view = fraud_feature_view()
    served = replay(view, log)
    last = log[-1]
    at_last = get_historical_features(view, log, [(last.entity_id, last.ts)])
    j = served.feature_names.index("count_24h")
    assert at_last.features[0, j] == served.features[-1, j] >= 1
    # count_24h of an entity = how many of its events so far (all within 24 h here)
    assert served.features[-1, j] == sum(1 for e in log if e.entity_id == last.entity_id)


def test_a_bad_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"entity_id":"a","ts":"2026-01-01T00:00:00Z","x":1}\n{"entity_id":"a"}\n')
    with pytest.raises(FileFormatError, match=":2: ts"):
        list(read_file_log(path))
