"""The worker's feature source backed by the Redis online feature store.

For each batch: write the events to the store (one round trip to read entity states and
watermarks, one to write them), get back every event's features as of that event, and hand the
model the columns it asks for. Events the store rejects (later than the allowed lateness) are
returned as rejections, which the worker sends to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.online import OnlineStore
from stream.decode import EventBatch
from stream.worker import FeatureColumns


class OnlineFeatures:
    def __init__(self, store: OnlineStore, source: str) -> None:
        self.store = store
        self.source = source  # the events topic: watermarks are per (source, partition)
        self.names = set(store.view.feature_names())
        self._raw_inputs = sorted(
            set(store.view.passthrough) | {a.source for a in store.view.aggregations if a.source}
        )

    def columns(self, batch: EventBatch, names: Sequence[str]) -> FeatureColumns:
        result = self.store.write_batch(
            batch.entity_ids,
            batch.event_times(),
            batch.columns(self._raw_inputs),
            batch.partitions,
            batch.offsets,
            self.source,
        )
        # A model may also use raw event fields the view does not keep.
        from_view = [n for n in names if n in self.names]
        columns = dict(result.columns(from_view))
        missing = [n for n in names if n not in columns]
        if missing:
            columns.update(batch.columns(missing))
        return FeatureColumns(columns, dict(result.rejected))
