"""The shipped Prometheus files pass promtool, and a real Prometheus (Debian's package, started
here on loopback) scrapes a running worker and sees its counters rise."""

from __future__ import annotations

import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from driftline.settings import Settings
from driftline.stack import debian_binary
from tests.integration.worker_support import produce_events, register, start_worker, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return debian_binary("prometheus", "prometheus", print)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("what", "path"),
    [("config", "deploy/prometheus/prometheus.yml"), ("rules", "deploy/prometheus/alerts.yml")],
)
def test_promtool_accepts_the_shipped_files(prometheus_bin: str, what: str, path: str) -> None:
    promtool = str(Path(prometheus_bin).with_name("promtool"))
    result = subprocess.run([promtool, "check", what, str(ROOT / path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(prometheus port, the port it scrapes, its log): start the target on that port yourself."""
    port, target = _free_port(), _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: driftline-worker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target}']\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _get(port, "/-/ready") is not None, 60, 0.5)
        yield port, target, log
    finally:
        proc.terminate()
        proc.wait(30)


def _get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            body: bytes = r.read()
            return body
    except OSError:
        return None


def _query(port: int, promql: str) -> float | None:
    body = _get(port, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if body is None:
        return None
    result = orjson.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_a_running_worker(
    own_settings: Settings, prometheus: tuple[int, int, Path]
) -> None:
    port, target, log = prometheus
    s = own_settings
    register(s)
    running = start_worker(s)
    running.worker.metrics.serve(target)
    try:
        produce_events(s, 2000)
        consumed = "sum(driftline_events_consumed_total)"
        try:
            wait_until(lambda: (_query(port, consumed) or 0) >= 2000, 60, 1.0)
        except AssertionError:
            print(log.read_text()[-3000:])
            raise
        first = _query(port, consumed)
        produce_events(s, 3000, seed=2, start_ts=1.7e9 + 5000)  # later: in order for the feature store
        wait_until(lambda: (_query(port, consumed) or 0) >= 5000, 60, 1.0)
        assert (_query(port, consumed) or 0) > (first or 0)  # rising, scrape after scrape
        assert _query(port, 'up{job="driftline-worker"}') == 1.0
        served = 'sum(driftline_predictions_total{arm="production"})'
        wait_until(lambda: (_query(port, served) or 0) >= 5000, 30, 1.0)
    finally:
        running.stop()  # its metrics server is a daemon thread: it ends with the test process
