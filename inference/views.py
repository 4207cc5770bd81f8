"""Which feature view builds a model version's inputs, recorded with the version.

A version trained on the events' own features records ``kind="none"``; one trained through a
view records the view's whole definition, so every reader (worker, API, retrain, replay) rebuilds
exactly the view training used, whatever the process's settings say. Versions registered before
views were recorded (``inputs is None``) are served with the settings' default view.

>>> from feature_store.definitions import fraud_feature_view
>>> rec = view_record(fraud_feature_view(), "builtin")
>>> rec.name, view_from_record(rec) == fraud_feature_view(), view_record(None).kind
('fraud', True, 'none')
"""

from __future__ import annotations

from typing import Literal

from feature_store.definitions import FeatureView
from inference.metadata import FeatureViewRecord, ModelVersion


def view_record(
    view: FeatureView | None, kind: Literal["builtin", "yaml"] = "yaml", source: str = ""
) -> FeatureViewRecord:
    """The record of `view` (None: the events' own features)."""
    if view is None:
        return FeatureViewRecord(kind="none")
    return FeatureViewRecord(
        kind=kind,
        name=view.name,
        source=source,
        definition=view.model_dump(mode="json"),
        fingerprint=view.fingerprint(),
    )


def view_from_record(record: FeatureViewRecord) -> FeatureView | None:
    """The view a record holds (None for ``kind="none"``)."""
    if record.definition is None:
        return None
    return FeatureView.model_validate(record.definition)


def view_of(meta: ModelVersion, default: FeatureView | None) -> FeatureView | None:
    """The view that builds `meta`'s inputs: its own record, or `default` for a version that
    recorded none (registered before views were recorded)."""
    if meta.inputs is None:
        return default
    return view_from_record(meta.inputs.view)


def view_sources(view: FeatureView) -> list[str]:
    """The raw event fields a view reads: its passthrough features and its aggregates' sources."""
    names = dict.fromkeys(view.passthrough)
    names.update(dict.fromkeys(a.source for a in view.aggregations if a.source))
    return list(names)
