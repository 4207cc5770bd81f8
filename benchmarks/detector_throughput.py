"""Cost of the in-process drift detectors, no Kafka or Redis needed; not a test::

    .venv/bin/python benchmarks/detector_throughput.py [--events 100000]

Prints `AdwinDetector.update`'s cost per value (200,000 standard-normal values, batches of
1,000) and `ModelMonitor.update`'s events/s on the unit tests' stream shape (12 numeric + 2
categorical features + the score, batches of 1,000), with ADWIN on the score only (the default)
and on every numeric feature. The figures quoted in detectors/adwin.py and detectors/monitor.py
come from here (they were timed assertions in the unit tests before; timing belongs here).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from detectors.adwin import AdwinDetector
from detectors.monitor import ModelMonitor, MonitorConfig
from detectors.reference import Reference
from tests.unit.test_detectors_monitor import _batches, _references


def adwin_cost_per_value(n: int = 200_000) -> float:
    rng = np.random.default_rng(5)
    det = AdwinDetector("x", Reference.from_values(rng.normal(size=5000)))
    x = rng.normal(size=n)
    start = time.perf_counter()
    for i in range(0, x.size, 1000):
        det.update(x[i : i + 1000], np.arange(i, i + 1000, dtype=float))
    return (time.perf_counter() - start) / x.size


def monitor_rate(events: int, adwin_features: bool) -> float:
    refs, score_ref = _references(seed=1)
    batches = list(_batches(np.random.default_rng(0), events))
    monitor = ModelMonitor(refs, score_ref, MonitorConfig(adwin_features=adwin_features))
    start = time.perf_counter()
    for cols, scores, ts in batches:
        monitor.update(cols, scores, ts)
    return events / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    print(f"AdwinDetector.update: {adwin_cost_per_value() * 1e6:.2f} us per value")
    default, every = monitor_rate(args.events, False), monitor_rate(args.events, True)
    print(f"ModelMonitor.update: {default:,.0f} events/s; with ADWIN on every feature {every:,.0f}")


if __name__ == "__main__":
    main()
