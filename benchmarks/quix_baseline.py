"""The Quix Streams peer of ``benchmarks/worker_throughput.py``: the fraud view's 28 features in Quix's state.

Written the way Quix Streams' documentation shows an application (3.x): an `Application` with its
defaults (RocksDB state with changelog topics, ``commit_interval`` 5 s, at-least-once), a
`StreamingDataFrame` over the events topic (JSON values), one ``apply(..., stateful=True)``
keeping each card's tiles in its `State` (the message key is the card: the events are keyed by
entity), one ``apply`` scoring the event with ONNX Runtime, and ``to_topic`` for the prediction.
Same model (loaded from the registry), same event validation (``RawEvent``), same prediction
record as the Driftline worker.

**The features.** The 14 raw features of the event plus the 14 windowed aggregates of
`feature_store.definitions.fraud_feature_view`, with the Driftline engine's semantics so that they
are equal bit for bit (`worker_throughput.py` checks it on the first ``BENCH_CHECK`` events, whose
predictions carry their ``features``): each window is read at the event's own time over whole
tiles (10 min on 1 min tiles, 1 h on 5 min tiles, 24 h on 2 h tiles: the tile holding the event
and the ``k - 1`` before it), sums added oldest tile first, an event more than the view's allowed
lateness (10 min) behind its card's newest event is dropped, ``amount_last`` is the value of the
newest event (ties: the later one), distinct counts are exact (Driftline's are exact up to 32
values per card and window; the synthetic cards use fewer).

Run by the benchmark as ``python benchmarks/quix_baseline.py`` with ``BENCH_PREFIX`` (registry
namespace), ``BENCH_GROUP`` (consumer group), ``BENCH_SOURCE`` / ``BENCH_SINK`` (topics),
``BENCH_STATE_DIR``, ``BENCH_EXPECT`` (events to time), ``BENCH_WARMUP`` (events before the clock
starts), ``BENCH_CHECK`` (how many first predictions carry their features) and ``BENCH_RESULT``
(a JSON file that receives ``{"warm": t, "done": t, "stopped": t, "count": n, "dropped": n}``:
epoch seconds at the ``BENCH_WARMUP``-th and the ``BENCH_EXPECT``-th event scored and handed to
the producer, and once ``Application.run`` returned after its final commit).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quixstreams import Application, State, message_context

from benchmarks.prediction_record import prediction_record
from driftline.settings import Settings
from driftline.wiring import model_registry
from feature_store.definitions import FRAUD_CATEGORICAL, FRAUD_NUMERIC, fraud_feature_view
from feature_store.engine import as_category, as_number
from inference.encoding import encode_features, encoded_width
from inference.metadata import FeatureSpec
from stream.events import RawEvent

MODEL = "fraud"
VIEW = fraud_feature_view()
LATENESS_S = VIEW.allowed_lateness.total_seconds()
# (tile seconds, tiles per window) of the 10 min, 1 h and 24 h windows (the view's own tiling)
TILES = {
    name: (VIEW.tile_size(w).total_seconds(), round(w / VIEW.tile_size(w)))
    for name, w in (("10m", VIEW.windows()[0]), ("1h", VIEW.windows()[1]), ("24h", VIEW.windows()[2]))
}
NAN = math.nan


def _tile(tiles: list[list[Any]], tau: int, make: Any) -> list[Any]:
    for tile in tiles:
        if tile[0] == tau:
            return tile
    tile = make(tau)
    tiles.append(tile)
    tiles.sort(key=lambda x: x[0])
    return tile


def _window(tiles: list[list[Any]], t: float, name: str) -> list[list[Any]]:
    size, k = TILES[name]
    tau = math.floor(t / size)
    return [x for x in tiles if tau - k < x[0] <= tau]  # kept sorted: oldest tile first


def _prune(tiles: list[list[Any]], newest: float, name: str) -> list[list[Any]]:
    """Drop the tiles no acceptable event can read any more."""
    size, k = TILES[name]
    reach = math.floor((newest - LATENESS_S) / size) - k + 1
    return [x for x in tiles if x[0] >= reach]


def _fmax(a: float | None, v: float) -> float | None:
    return a if math.isnan(v) else (v if a is None or v > a else a)


def _fmin(a: float | None, v: float) -> float | None:
    return a if math.isnan(v) else (v if a is None or v < a else a)


def card_features(event: RawEvent, state: State) -> dict[str, Any] | None:
    """Apply one event to its card's tiles (kept in the Quix state); its 28 features as of it.

    None for an event too late to apply (Driftline dead-letters those).
    """
    t = event.ts.timestamp()
    s = state.get("s") or {"newest": None, "m1": [], "m5": [], "h2": [], "last": None}
    newest = s["newest"]
    if newest is not None and t < newest - LATENESS_S:
        return None
    f = event.features
    raw = {name: as_number(f.get(name)) for name in FRAUD_NUMERIC}
    cats = {name: as_category(f.get(name)) for name in FRAUD_CATEGORICAL}
    amount, distance = raw["amount"], raw["distance_from_home"]
    present = not math.isnan(amount)
    if newest is None or t >= newest:
        s["newest"] = newest = t
    # 10 min window on 1 min tiles: [tile, count]
    m1 = _tile(s["m1"], math.floor(t / TILES["10m"][0]), lambda tau: [tau, 0.0])
    m1[1] += 1.0
    # 1 h window on 5 min tiles: [tile, count, amounts, amount sum, amount max]
    m5 = _tile(s["m5"], math.floor(t / TILES["1h"][0]), lambda tau: [tau, 0.0, 0.0, 0.0, None])
    m5[1] += 1.0
    if present:
        m5[2] += 1.0
        m5[3] += amount
    m5[4] = _fmax(m5[4], amount)
    # 24 h window on 2 h tiles: [tile, count, amounts, sum, max, distance min, max, merchants, countries]
    h2 = _tile(
        s["h2"], math.floor(t / TILES["24h"][0]), lambda tau: [tau, 0.0, 0.0, 0.0, None, None, None, [], []]
    )
    h2[1] += 1.0
    if present:
        h2[2] += 1.0
        h2[3] += amount
    h2[4] = _fmax(h2[4], amount)
    h2[5], h2[6] = _fmin(h2[5], distance), _fmax(h2[6], distance)
    for j, name in ((7, "merchant_category"), (8, "country")):
        value = cats[name]
        if value is not None and value not in h2[j]:
            h2[j].append(value)
    if present and (s["last"] is None or t >= s["last"][0]):
        s["last"] = [t, amount]
    for key, name in (("m1", "10m"), ("m5", "1h"), ("h2", "24h")):
        s[key] = _prune(s[key], newest, name)
    state.set("s", s)

    w10, w1h, w24 = _window(s["m1"], t, "10m"), _window(s["m5"], t, "1h"), _window(s["h2"], t, "24h")

    def total(tiles: list[list[Any]], j: int) -> float:
        out = 0.0
        for x in tiles:  # oldest tile first, as Driftline adds them
            out += x[j]
        return out

    def top(tiles: list[list[Any]], j: int, pick: Any) -> float:
        values = [x[j] for x in tiles if x[j] is not None]
        return pick(values) if values else NAN

    n1h, n24 = total(w1h, 2), total(w24, 2)
    out: dict[str, Any] = {**raw, **cats}
    out |= {
        "count_10m": total(w10, 1),
        "count_1h": total(w1h, 1),
        "count_24h": total(w24, 1),
        "amount_mean_1h": total(w1h, 3) / n1h if n1h > 0 else NAN,
        "amount_mean_24h": total(w24, 3) / n24 if n24 > 0 else NAN,
        "amount_sum_1h": total(w1h, 3),
        "amount_sum_24h": total(w24, 3),
        "amount_max_1h": top(w1h, 4, max),
        "amount_max_24h": top(w24, 4, max),
        "distance_from_home_min_24h": top(w24, 5, min),
        "distance_from_home_max_24h": top(w24, 6, max),
        "amount_last": s["last"][1] if s["last"] is not None else NAN,
        "merchant_category_distinct_count_24h": float(len({v for x in w24 for v in x[7]})),
        "country_distinct_count_24h": float(len({v for x in w24 for v in x[8]})),
    }
    return out


class RowEncoder:
    """One event's model input, built directly (`encode_features` is made for batches: its
    per-call cost would dominate a per-event app). Checked equal to it on the first events."""

    def __init__(self, specs: list[FeatureSpec]) -> None:
        self.width = encoded_width(specs)
        self.plan: list[tuple[str, int, float, dict[str, int]]] = []
        offset = 0
        for spec in specs:
            categories = {c: j for j, c in enumerate(spec.categories)} if spec.kind == "categorical" else {}
            self.plan.append((spec.name, offset, spec.fill_value, categories))
            offset += spec.width

    def encode(self, features: dict[str, Any]) -> np.ndarray:
        row = np.zeros((1, self.width), dtype=np.float32)
        for name, offset, fill, categories in self.plan:
            value = features[name]
            if categories:
                j = categories.get(value) if isinstance(value, str) else None
                if j is not None:
                    row[0, offset + j] = 1.0
            else:
                number = as_number(value)
                row[0, offset] = fill if math.isnan(number) else number
        return row


def main() -> None:
    prefix = os.environ.get("BENCH_PREFIX", "bench")
    expect = int(os.environ.get("BENCH_EXPECT", "0"))
    warmup = int(os.environ.get("BENCH_WARMUP", "0"))
    check = int(os.environ.get("BENCH_CHECK", "0"))
    result = os.environ.get("BENCH_RESULT", "")
    settings = Settings(topic_prefix=prefix)
    meta, session = model_registry(settings, publish=False).load(MODEL)
    specs = session.features
    names = [f.name for f in specs]
    if set(names) != set(VIEW.feature_names()):
        raise SystemExit(f"the model's inputs are not the fraud view's: {names}")

    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=os.environ.get("BENCH_GROUP", f"{prefix}-quix"),
        auto_offset_reset="earliest",  # the events were produced before the app started
        state_dir=os.environ.get("BENCH_STATE_DIR", "state"),
        loglevel="WARNING",
    )
    # Raw bytes, validated by the same pydantic model as the worker's (`RawEvent.model_validate_json`).
    events = app.topic(os.environ.get("BENCH_SOURCE", f"{prefix}.events"), value_deserializer="bytes")
    predictions = app.topic(
        os.environ.get("BENCH_SINK", f"{prefix}.quix-predictions"), value_serializer="json"
    )
    progress: dict[str, Any] = {"count": 0, "dropped": 0, "warm": None, "done": None}

    encoder = RowEncoder(list(specs))

    def features(value: bytes, state: State) -> dict[str, Any]:
        event = RawEvent.model_validate_json(value)
        return {"event": event, "features": card_features(event, state)}

    def score(item: dict[str, Any]) -> dict[str, Any] | None:
        started = time.perf_counter()
        progress["count"] += 1
        count = progress["count"]
        event, feats = item["event"], item["features"]
        record: dict[str, Any] | None = None
        if feats is None:
            progress["dropped"] += 1
        else:
            x = encoder.encode(feats)
            if count <= check and not np.array_equal(
                x, encode_features(specs, {n: [feats[n]] for n in names}, 1)
            ):
                raise RuntimeError(f"the row encoder differs from encode_features on {event.event_id}")
            p = float(session.predict(x)[0])
            ctx = message_context()
            record = prediction_record(event, meta, p, started, ctx.partition, ctx.offset)
            record["ts"] = event.ts.isoformat().replace("+00:00", "Z")  # Quix's JSON has no datetimes
            if count <= check:
                record["features"] = {k: None if isinstance(v, float) and math.isnan(v) else v
                                      for k, v in feats.items()}  # fmt: skip
        if count == warmup:
            progress["warm"] = time.time()
        if count == expect:
            progress["done"] = time.time()
            app.stop()  # a graceful stop: the checkpoint is committed before run() returns
        return record

    sdf = app.dataframe(events)
    sdf = sdf.apply(features, stateful=True)
    sdf = sdf.apply(score)
    sdf = sdf.filter(lambda record: record is not None)
    sdf.to_topic(predictions)
    app.run()
    if result:
        payload = {**progress, "stopped": time.time()}
        Path(result).write_bytes(orjson.dumps(payload))


if __name__ == "__main__":
    main()
