"""`driftline report` from what a real worker recorded, rendered in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from driftline.produce import produce_generated
from driftline.report import gather, render
from driftline.settings import Settings
from driftline.stack import debian_binary
from stream.synthetic import DriftSchedule
from tests.integration.worker_support import drain, register, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"  # kept after the run (gitignored)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_report_draws_in_headless_chromium_without_script_errors(
    own_settings: Settings, tmp_path: Path
) -> None:
    chromium = debian_binary("chromium", "chromium", print)
    s = own_settings.model_copy(update={"drift_window_seconds": 1000.0, "drift_ks_sample_rate": 1.0})
    register(s)
    running = start_worker(s, exit_when_idle=4.0)
    tally = produce_generated(
        s,
        12_000,
        0,
        seed=9,
        entities=1000,
        schedule=DriftSchedule(covariate_at=6_000),
        label_delay=10,
        start_ts=1.7e9,
        console=Console(quiet=True),
    )
    assert tally.failed == 0
    drain(s, running)

    data = gather(s, "fraud")
    psi_windows = [w for v in data.windows for w in v.windows if w.detector == "psi"]
    assert len({w.window_end_ts for w in psi_windows}) >= 4  # the workers' closed windows, recorded
    assert data.alerts and data.current_events > 1000
    # It leads with the incident the covariate shift opened; every monitored input has a current
    # distribution (the view's aggregates from the drift windows, as PSI binned them).
    assert len(data.incidents) >= 1 and data.incidents[0].features, data.incidents
    assert data.bins and all(sum(b["counts"]) > 0 for b in data.bins.values())
    page = tmp_path / "report.html"
    page.write_text(render(data))
    text = page.read_text()
    assert text.index("<h2>Incidents</h2>") < text.index("<h2>Reference")
    assert data.incidents[0].id[:12] in text and data.incidents[0].summary.split(";")[0] in text

    shot = tmp_path / "report.png"
    run = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1400,4000",
            "--virtual-time-budget=5000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 50_000, run.stderr[-3000:]
    console_errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    assert "Uncaught" not in run.stderr, run.stderr[-3000:]

    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Plotly drew every chart: one SVG per figure after its script ran (the raw HTML has none).
    drawn = dom.stdout.count('class="main-svg"') - page.read_text().count('class="main-svg"')
    assert drawn >= 5, dom.stderr[-2000:]
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(shot, OUTPUT / "report.png")
    shutil.copy(page, OUTPUT / "report.html")
