"""Feature definitions, the Redis online store and point-in-time historical features.

See feature_store/README.md for the semantics, the Redis key layout and the bounds.
"""

from feature_store.definitions import Aggregation, FeatureView, fraud_feature_view
from feature_store.engine import Engine, StateMismatch
from feature_store.historical import (
    EventLog,
    HistoricalEvent,
    HistoricalFeatures,
    ReplayResult,
    get_historical_features,
    replay,
)
from feature_store.online import EntityFeatures, OnlineStore, WriteConflict, WriteResult

__all__ = [
    "Aggregation",
    "Engine",
    "EntityFeatures",
    "EventLog",
    "FeatureView",
    "HistoricalEvent",
    "HistoricalFeatures",
    "OnlineStore",
    "ReplayResult",
    "StateMismatch",
    "WriteConflict",
    "WriteResult",
    "fraud_feature_view",
    "get_historical_features",
    "replay",
]
