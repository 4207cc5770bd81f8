"""The input contract: value kinds, per-batch checks, and how files are read into kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftline.errors import DriftlineError
from driftline.schema import infer_schema, starter_view
from driftline.training_data import file_training_set
from feature_store.definitions import FeatureView
from inference.contract import KindConflict, check_inputs, infer_kind, raw_inputs, wrong_type_reason
from inference.encoding import encode_features
from inference.metadata import FeatureSpec, RawInput
from inference.training import train_model
from stream.file_source import FileFormatError, read_events

CONTRACT = [
    RawInput(name="amount", kind="numeric"),
    RawInput(name="vip", kind="boolean"),
    RawInput(name="country", kind="categorical"),
]


def test_each_kind_takes_only_its_own_json_type() -> None:
    rows: list[dict[str, object]] = [
        {"amount": 1, "vip": True, "country": "DE"},  # fine
        {"amount": "1", "vip": 1, "country": 7},  # every input of the wrong kind
        {"amount": True, "vip": "true", "country": False},  # booleans are not numbers, nor strings
        {"amount": None, "extra": 1},  # null and absent are missing; extra is unknown
    ]
    check = check_inputs(CONTRACT, rows, known=["label"])
    assert check.wrong_type == {"amount": [1, 2], "vip": [1, 2], "country": [1, 2]}
    assert check.missing == {"amount": 1, "vip": 1, "country": 1}
    assert check.unknown == {"extra": 1}
    assert check.wrong_rows() == {1: "amount", 2: "amount"}
    assert (
        check_inputs(
            CONTRACT, [{"label": 1, "amount": 2.5, "vip": False, "country": "FR"}], ["label"]
        ).unknown
        == {}
    )


def test_wrong_type_reason_names_feature_and_kind() -> None:
    assert wrong_type_reason("amount", "numeric", "12.5", "shop:2") == (
        "features.amount: shop:2 expects a number (numeric), got a string"
    )
    assert wrong_type_reason("vip", "boolean", 1, "shop:2") == (
        "features.vip: shop:2 expects true or false (boolean), got a number"
    )


def test_kinds_of_training_columns_and_conflicts() -> None:
    assert infer_kind([1, 2.5]) == "numeric" and infer_kind([True, False]) == "boolean"
    with pytest.raises(KindConflict, match="boolean and numeric"):
        infer_kind([True, 1])
    with pytest.raises(KindConflict, match="'x' mixes categorical and numeric"):
        raw_inputs([{"x": 1}, {"x": "a"}], ["x"])
    assert raw_inputs([{"x": 1}, {"y": True}], ["x", "y", "z"]) == [
        RawInput(name="x", kind="numeric", missing_share=0.5),
        RawInput(name="y", kind="boolean", missing_share=0.5),
    ]


def test_booleans_encode_as_one_and_zero_whatever_carries_them() -> None:
    spec = [FeatureSpec(name="vip", kind="boolean", fill_value=1.0)]
    assert encode_features(spec, {"vip": [True, False, None]}, 3)[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert encode_features(spec, {"vip": [1.0, 0.0, float("nan")]}, 3)[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert encode_features(spec, {"vip": ["true", np.nan, 0]}, 3)[:, 0].tolist() == [1.0, 1.0, 0.0]


def test_training_on_a_boolean_column_gives_a_boolean_input_with_a_two_bin_reference() -> None:
    rng = np.random.default_rng(0)
    vip = rng.random(2000) < 0.3
    y = (vip | (rng.random(2000) < 0.1)).astype(int)
    trained = train_model({"x": rng.normal(size=2000)}, {}, y, boolean={"vip": vip.astype(float)})
    kinds = {f.name: f.kind for f in trained.features}
    assert kinds == {"vip": "boolean", "x": "numeric"}
    ref = trained.reference["vip"]
    assert ref.kind == "categorical" and set(ref.frequencies) == {"true", "false"}
    assert abs(ref.frequencies["true"] - 0.3) < 0.05 and trained.training.metrics["auc"] > 0.8


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_true_false_cells_are_booleans_and_strings_stay_strings(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.csv",
        ["entity_id,ts,vip,code", "a,2026-01-01T00:00:00Z,true,007", "b,2026-01-01,False,x"],
    )
    records = [r for r in read_events(path) if not isinstance(r, FileFormatError)]
    assert [r.event.features for r in records] == [{"vip": True, "code": 7}, {"vip": False, "code": "x"}]


def test_a_top_level_label_points_at_label_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", ['{"entity_id":"a","ts":"2026-01-01","features":{"x":1},"label":1}'])
    (error,) = list(read_events(path))
    assert isinstance(error, FileFormatError) and "pass --label-field label" in str(error)


def _labeled(tmp_path: Path, n: int = 120) -> Path:
    lines = [
        f'{{"entity_id":"e{i % 7}","ts":"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z","amount":{i % 13},'
        f'"vip":{"true" if i % 3 else "false"},"country":"{"DE" if i % 2 else "FR"}","label":{i % 2}}}'
        for i in range(n)
    ]
    return _write(tmp_path / "labeled.jsonl", lines)


def test_file_training_set_reads_kinds_and_refuses_a_view_over_absent_fields(tmp_path: Path) -> None:
    path = _labeled(tmp_path)
    data = file_training_set(path, "label")
    assert (
        set(data.numeric) == {"amount"}
        and set(data.boolean) == {"vip"}
        and set(data.categorical) == {"country"}
    )
    assert {r.name: r.kind for r in data.raw} == {
        "amount": "numeric",
        "vip": "boolean",
        "country": "categorical",
    }
    view = FeatureView.model_validate(
        {
            "name": "v",
            "passthrough": ["amount", "vip", "device"],
            "aggregations": [{"function": "sum", "source": "spend"}],
        }
    )
    with pytest.raises(DriftlineError, match="reads device, spend, which no training event"):
        file_training_set(path, "label", view)


def test_schema_infer_and_the_starter_view(tmp_path: Path) -> None:
    inferred = infer_schema(_labeled(tmp_path))
    kinds = {i.name: (i.kind, i.distinct) for i in inferred.inputs}
    assert kinds == {
        "amount": ("numeric", 13),
        "country": ("categorical", 2),
        "label": ("numeric", 2),
        "vip": ("boolean", 2),
    }
    assert inferred.entities == 7 and inferred.hint is not None and "--label-field label" in inferred.hint
    view = starter_view(inferred)
    assert view.passthrough == ["amount", "country", "vip"] and view.categorical == ["country"]
    assert {"count_1h", "amount_mean_24h", "amount_last", "country_distinct_count_24h"} <= set(
        view.feature_names()
    )
    data = file_training_set(tmp_path / "labeled.jsonl", "label", view)  # the starter view trains as is
    assert "amount_mean_24h" in data.numeric and "vip" in data.boolean
