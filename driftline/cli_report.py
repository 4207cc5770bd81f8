"""``driftline report``: the drift report as one self-contained HTML file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from driftline.cli_common import CliError, console, settings


def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    model: Annotated[str, typer.Option(help="Model name.")] = "fraud",
    since: Annotated[
        datetime | None, typer.Option(help="Only windows, alerts and events from this time on (UTC).")
    ] = None,
    recent: Annotated[int, typer.Option(min=100, help="Latest events for the current histograms.")] = 5000,
) -> None:
    """Reference vs current histograms, PSI and KS over time, alerts, change points and model
    versions, from what the system recorded (Redis and Kafka)."""
    from driftline.report import gather, render

    s = settings("kafka", "redis")
    start = since.replace(tzinfo=since.tzinfo or UTC).timestamp() if since else None
    try:
        data = gather(s, model, start, recent)
    except LookupError as exc:
        raise CliError(str(exc.args[0])) from None
    try:
        out.write_text(render(data))
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}") from None
    windows = sum(len(v.windows) for v in data.windows)
    console.print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(data.alerts)} alerts, "
        f"{windows} drift windows, {len(data.versions)} versions of {model}",
        highlight=False,
    )
