"""The per-event baseline for ``benchmarks/worker_throughput.py``: a tutorial-style Faust app.

One agent; per event it parses and validates the JSON (pydantic ``RawEvent``), builds the
single-row feature matrix with ``encode_features``, runs ONNX Runtime on that one row and
``await``s ``predictions.send(...)`` of one prediction. Same model (loaded from the registry),
same prediction record as the Driftline worker.

Run by the benchmark as ``python benchmarks/faust_baseline.py worker -l warn`` with:

* ``BENCH_PREFIX``: topic prefix and registry namespace of the benchmark run;
* ``BENCH_APP_ID``: Faust app id (= consumer group; its internal topics start with it);
* ``BENCH_SOURCE``: topic to read; ``BENCH_SINK``: topic to write the predictions to;
* ``BENCH_EXPECT``: stop counting after this many events; ``BENCH_RESULT``: a JSON file that
  receives ``{"first": t, "done": t, "count": n}`` (epoch seconds; ``done`` is after the
  producer flushed the N-th prediction) once N events were scored.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.prediction_record import prediction_record
from driftline.settings import Settings
from driftline.wiring import model_registry
from inference.encoding import encode_features
from stream.events import RawEvent

MODEL = "fraud"

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
SOURCE = os.environ.get("BENCH_SOURCE", f"{PREFIX}.events")
SINK = os.environ.get("BENCH_SINK", f"{PREFIX}.faust-predictions")
EXPECT = int(os.environ.get("BENCH_EXPECT", "0"))
RESULT = os.environ.get("BENCH_RESULT", "")

settings = Settings(topic_prefix=PREFIX)
meta, session = model_registry(settings, publish=False).load(MODEL)
specs = session.features
names = [f.name for f in specs]

app = faust.App(
    os.environ.get("BENCH_APP_ID", f"{PREFIX}-faust"),
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_partitions=6,
)
events_topic = app.topic(SOURCE, key_type=bytes, value_type=bytes, value_serializer="raw")
predictions_topic = app.topic(SINK, key_type=bytes, value_type=bytes, value_serializer="raw")

progress: dict[str, Any] = {"count": 0, "first": None}


@app.agent(events_topic)
async def score(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        source = stream.current_event.message if stream.current_event is not None else None
        if progress["first"] is None:
            progress["first"] = time.time()
        started = time.perf_counter()
        event = RawEvent.model_validate_json(value)
        columns = {name: [event.features.get(name)] for name in names}
        x = encode_features(specs, columns, 1)
        p = float(session.predict(x)[0])
        record = prediction_record(
            event,
            meta,
            p,
            started,
            source.partition if source is not None else -1,
            source.offset if source is not None else -1,
        )
        await predictions_topic.send(
            key=event.entity_id.encode(), value=orjson.dumps(record, option=orjson.OPT_UTC_Z)
        )
        progress["count"] += 1
        if EXPECT and progress["count"] == EXPECT:
            await app.producer.flush()
            done = time.time()
            if RESULT:
                payload = {"first": progress["first"], "done": done, "count": progress["count"]}
                Path(RESULT).write_bytes(orjson.dumps(payload))


if __name__ == "__main__":
    app.main()
