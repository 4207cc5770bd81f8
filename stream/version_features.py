"""The worker's feature source when each model version brings its own feature view.

Every batch is written to the online store of each view the deployment uses (production's, and
a canary's or shadow's when theirs differs), and each version is scored with its own view's
features. A promotion that changes the view therefore changes the features from the next batch
on: the new view's store starts with the entities' first events after the switch (its
watermarks are its own, so a replay after a crash is still applied once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from feature_store.definitions import FeatureView
from feature_store.online import OnlineStore
from inference.metadata import ModelVersion
from stream.decode import EventBatch
from stream.online_features import OnlineFeatures
from stream.scoring import Scorer
from stream.worker import FeatureColumns, FeatureSource, RawFeatures

ViewOf = Callable[[ModelVersion], FeatureView | None]


class VersionFeatures:
    """Each deployed version's inputs from its own view (`inference.views.view_of`)."""

    def __init__(self, view_of: ViewOf, store_for: Callable[[FeatureView], OnlineStore], source: str) -> None:
        self.view_of = view_of
        self.store_for = store_for
        self.source = source  # the events topic (watermarks are per source and partition)
        self._sources: dict[str, FeatureSource] = {"": RawFeatures()}  # by view fingerprint

    def _source(self, view: FeatureView | None) -> tuple[str, FeatureSource]:
        key = view.fingerprint() if view is not None else ""
        if key not in self._sources:
            assert view is not None
            self._sources[key] = OnlineFeatures(self.store_for(view), self.source)
        return key, self._sources[key]

    def columns(self, batch: EventBatch, names: Sequence[str]) -> FeatureColumns:
        """Without a deployment: the events' own features (the protocol's plain form)."""
        return RawFeatures().columns(batch, names)

    def columns_for(self, batch: EventBatch, scorer: Scorer) -> FeatureColumns:
        versions = [meta for meta, _ in scorer.versions()]
        by_view: dict[str, tuple[FeatureSource, list[ModelVersion]]] = {}
        for meta in versions:
            key, source = self._source(self.view_of(meta))
            by_view.setdefault(key, (source, []))[1].append(meta)
        production = versions[0]  # Scorer.versions lists production first
        results: dict[str, FeatureColumns] = {}
        for key, (source, metas) in by_view.items():
            names = list(dict.fromkeys(f.name for m in metas for f in m.features))
            results[key] = source.columns(batch, names)
        main_key = next(k for k, (_, metas) in by_view.items() if production in metas)
        rejected: dict[int, str] = {}
        for result in results.values():  # late for one view's store is late for all
            rejected.update(result.rejected)
        per_version = {
            meta.ref: results[key].columns
            for key, (_, metas) in by_view.items()
            if key != main_key
            for meta in metas
        }
        return FeatureColumns(results[main_key].columns, rejected, per_version)
