"""`driftline demo --quick`, as a user runs it, on this test's own topics (the stack is kept)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from driftline.settings import Settings
from tests.helpers import run_cli

# CPU-heavy (four child processes): under xdist, never beside the other heavy tests.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("cpu-heavy")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_summary_shows_incidents_a_retrain_and_a_promotion(
    own_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        "DRIFTLINE_TOPIC_PREFIX": own_settings.topic_prefix,
        "DRIFTLINE_CACHE_DIR": str(tmp_path),  # its report goes there
        "DRIFTLINE_API_PORT": str(_free_port()),
        "COLUMNS": "200",
    }
    result = run_cli("demo", "--quick", "--keep", env=env, timeout=900)
    out = result.stdout
    assert result.returncode == 0, (out[-3000:], result.stderr[-3000:])
    summary = out[out.index("Summary") :]
    scored = int(re.search(r"([\d,]+) events scored", summary).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert scored >= 24_000, summary  # more when the concept flip waited for the first retrained model
    found = re.search(r"incidents: (\d+) opened, (\d+) resolved \(from (\d+) detector signals\)", summary)
    assert found, summary
    opened, resolved, signals = (int(x) for x in found.groups())
    retrains = int(re.search(r"retrains: (\d+)", summary).group(1))  # type: ignore[union-attr]
    promotions = int(re.search(r"promotions: (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert opened >= 1 and retrains >= 1 and promotions >= 1, summary
    # Incidents, not a storm: two changes (and what retrained models legitimately raise) give a
    # few incidents out of many more detector signals; the promotions resolve them.
    assert opened <= 4 < signals and resolved >= 1, summary
    assert "drift incidents" in summary
    assert "production fraud:1 -> fraud:" in summary and "production fraud:1 -> fraud:1" not in summary, (
        summary
    )
    assert "concept flip" in summary  # the live-accuracy table
    assert (tmp_path / "report.html").exists()
    assert "the stack keeps running" in out
    # A quiet run: our progress lines and the live view only, no client library's log lines.
    for stream in (out, result.stderr):
        raw = [line for line in stream.splitlines() if line.lstrip().startswith("%")]
        assert not raw, raw[:5]  # librdkafka's own "%4|...|GETPID|..." lines
        noisy = [
            line for line in stream.splitlines() if "Deprecated" in line or "BuildBackendWarning" in line
        ]
        assert not noisy, noisy[:5]
