"""The worker's Prometheus metrics. One registry per worker, so tests can run several."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stream.dependency import dependency_gauge
from stream.outputs import output_counters

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)


class BatchHistogram(Collector):
    """A Prometheus histogram that observes a whole numpy array at once.

    ``prometheus_client.Histogram.observe`` costs ~1 us per value; the worker records one value
    per event, so it bins each batch with one ``searchsorted`` instead.

    >>> h = BatchHistogram("lag_seconds", "Lag", (0.1, 1.0), CollectorRegistry())
    >>> h.observe_many(np.array([0.05, 0.1, 0.5, 7.0, float("nan")]))
    >>> [(s.labels.get("le"), s.value) for s in next(iter(h.collect())).samples][:4]
    [('0.1', 2), ('1.0', 3), ('+Inf', 4), (None, 4)]
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._upper = np.array([*buckets, math.inf], dtype=np.float64)
        self._counts = np.zeros(len(self._upper), dtype=np.int64)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        # Bucket `le` counts values <= le: the first upper bound >= the value.
        counts = np.bincount(np.searchsorted(self._upper, values, side="left"), minlength=len(self._upper))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[
                (floatToGoString(le), c) for le, c in zip(self._upper.tolist(), cumulative, strict=True)
            ],
            sum_value=total,
        )


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.consumed = Counter(
            "driftline_events_consumed", "Messages read from the events topic", registry=r
        )
        self.processed = Counter(
            "driftline_events_processed", "Events by outcome (ok, or dlq)", ["outcome"], registry=r
        )
        self.dlq = Counter("driftline_dlq", "Dead letters by reason code", ["reason"], registry=r)
        self.predictions = Counter(
            "driftline_predictions",
            "Predictions by model version and arm",
            ["model", "version", "arm"],
            registry=r,
        )
        self.batch_size = Histogram(
            "driftline_batch_size",
            "Messages per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.batch_latency = Histogram(
            "driftline_batch_latency_seconds",
            "Processing time of a micro-batch, consume to commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_lag = BatchHistogram(
            "driftline_event_lag_seconds", "End-to-end lag: prediction time minus event time", LAG_BUCKETS, r
        )
        self.inference = Histogram(
            "driftline_inference_seconds",
            "ONNX Runtime time per batch and model version",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag", "Messages behind the end of each partition", ["partition"], registry=r
        )
        self.model_info = Gauge(
            "driftline_model_info",
            "Model versions loaded by this worker",
            ["name", "version", "stage"],
            registry=r,
        )
        self.swaps = Counter("driftline_model_swaps", "Hot swaps of the deployment", registry=r)
        self.metadata_missing = Gauge(
            "driftline_model_metadata_missing",
            "1 while the registry lacks the metadata of the production version this worker serves",
            ["model"],
            registry=r,
        )
        self.retries, self.outputs_refused = output_counters(r)
        self.last_batch = Gauge(
            "driftline_last_batch_completed_timestamp",
            "Wall-clock time (epoch s) the last batch was committed (start-up time before the first)",
            registry=r,
        )
        self.batch_completed()
        self.follower_poll_age = Gauge(
            "driftline_model_follower_seconds_since_poll",
            "Seconds since the model follower last read the registry successfully",
            registry=r,
        )
        self.dependency_up = dependency_gauge(r)
        self.outage_waits = Counter(
            "driftline_outage_waits",
            "Batches not committed because a dependency was unreachable, redone once it was back",
            ["dependency"],
            registry=r,
        )

    def batch_completed(self) -> None:
        self.last_batch_at = time.time()
        self.last_batch.set(self.last_batch_at)

    def healthy(self, bound: float) -> tuple[bool, str]:
        """Live unless no batch completed for `bound` seconds while some partition has lag."""
        lag = sum(
            s.value
            for metric in self.consumer_lag.collect()
            for s in metric.samples
            if s.name == "driftline_consumer_lag"
        )
        idle = time.time() - self.last_batch_at
        if lag > 0 and idle > bound:
            return False, f"no batch completed for {idle:.0f} s (bound {bound:.0f} s), lag {lag:.0f}"
        return True, f"last batch {idle:.0f} s ago, lag {lag:.0f}"

    def serve(self, port: int, liveness_bound: float = 0.0) -> None:
        """``/metrics`` (and every other path) as Prometheus text, plus ``/healthz`` (`healthy`)."""
        if port:
            health = (lambda: self.healthy(liveness_bound)) if liveness_bound > 0 else None
            serve_metrics(port, self.registry, health)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


def serve_metrics(
    port: int, registry: CollectorRegistry, health: Callable[[], tuple[bool, str]] | None = None
) -> WSGIServer:
    """Serve `registry` on ``port`` in a daemon thread; ``/healthz`` answers 200, or 503 when
    `health` says the process is stuck (a supervisor's liveness probe)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, why = health() if health is not None else (True, "ok")
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"{'ok' if ok else 'stuck'}: {why}\n".encode()]
        return metrics_app(environ, start_response)

    server = make_server("", port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
