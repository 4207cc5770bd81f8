"""``driftline report``: a self-contained HTML drift report, drawn from what the system recorded.

`gather` reads, never re-runs: the model's versions and lifecycle events (registry, Redis), the
drift windows the workers closed (``<ns>:drift:<model>:<version>:~history``, Redis), the alerts
(``<prefix>.alerts``, Kafka) and the latest events (``<prefix>.events``, Kafka) for the current
distribution of each feature. `render` turns that `ReportData` into one HTML page of plotly
charts (plotly.js inlined, so the file opens offline): per feature the reference against the
current histogram, PSI and the KS p-value over time with their thresholds, a timeline of alerts,
change points (ADWIN, error rate) and model versions, and the alerts as a table.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field, ValidationError

from detectors.alerts import DriftAlert
from detectors.signals import SCORE_FEATURE, WindowStat
from driftline.settings import Settings
from driftline.wiring import model_registry, redis_client
from inference.metadata import ModelEvent, ModelVersion
from stream.drift import history_key
from stream.event_log import read_messages, read_recent
from stream.events import RawEvent
from stream.topics import Topics

PSI_WARNING, PSI_CRITICAL = 0.1, 0.2
KS_ALPHA = 0.05


class VersionWindows(BaseModel):
    version: int
    windows: list[WindowStat] = Field(default_factory=list)


class ReportData(BaseModel):
    model: str
    generated_at: datetime
    since: float | None
    versions: list[ModelVersion]
    events: list[ModelEvent]
    windows: list[VersionWindows]
    alerts: list[DriftAlert]
    current: dict[str, list[Any]]  # feature -> its values in the latest events
    current_events: int


def gather(s: Settings, model: str, since: float | None = None, recent: int = 5000) -> ReportData:
    registry = model_registry(s, publish=False)
    versions = registry.versions(model)
    if not versions:
        raise LookupError(f"no model named {model!r} in the registry (see `driftline models list`)")
    r = redis_client(s)
    windows = []
    for v in versions:
        raws = r.lrange(history_key(s.topic_prefix, model, v.version), 0, -1)
        stats = [WindowStat.model_validate_json(raw) for raw in raws]
        windows.append(
            VersionWindows(version=v.version, windows=[w for w in stats if _after(w.window_end_ts, since)])
        )
    topics = Topics(s.topic_prefix)
    alerts = []
    for msg in read_messages(s.kafka_client_config(), topics.alerts):
        try:
            alert = DriftAlert.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue
        if alert.model == model and _after(alert.window_end_ts, since):
            alerts.append(alert)
    features = {name for v in versions for name in v.reference}
    current: dict[str, list[Any]] = {name: [] for name in sorted(features)}
    n = 0
    for msg in read_recent(s.kafka_client_config(), topics.events, recent):
        try:
            event = RawEvent.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue
        n += 1
        for name in current:
            current[name].append(event.features.get(name))
    return ReportData(
        model=model,
        generated_at=datetime.now(UTC),
        since=since,
        versions=versions,
        events=[e for e in registry.history(model) if _after(e.ts.timestamp(), since)],
        windows=windows,
        alerts=alerts,
        current=current,
        current_events=n,
    )


def _after(ts: float, since: float | None) -> bool:
    return since is None or ts >= since


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def render(data: ReportData) -> str:
    """The report as one self-contained HTML page."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures: list[tuple[str, Any]] = []
    production = next((v for v in reversed(data.versions) if v.stage == "production"), data.versions[-1])
    names = [n for n in sorted(production.reference) if n in data.current]
    if names:
        cols = 2
        rows = (len(names) + cols - 1) // cols
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
        for i, name in enumerate(names):
            ref = production.reference[name]
            row, col = i // cols + 1, i % cols + 1
            values = data.current[name]
            first = i == 0
            if ref.kind == "numeric":
                now = np.array([v for v in values if isinstance(v, int | float)], dtype=np.float64)
                lo, hi = np.percentile(
                    np.concatenate([ref.sample, now]) if now.size else ref.sample, [0.5, 99.5]
                )
                bins = {"start": float(lo), "end": float(hi), "size": float(hi - lo) / 30 or 1.0}
                for label, sample, color in (
                    ("reference", ref.sample, "#1f77b4"),
                    ("current", now, "#d62728"),
                ):
                    fig.add_trace(
                        go.Histogram(
                            x=list(sample),
                            xbins=bins,
                            histnorm="probability",
                            name=label,
                            legendgroup=label,
                            showlegend=first,
                            marker_color=color,
                            opacity=0.55,
                        ),
                        row=row,
                        col=col,
                    )
            else:
                # Booleans as their reference's two categories, "true"/"false".
                seen = [(str(v).lower() if isinstance(v, bool) else str(v)) for v in values if v is not None]
                cats = sorted(set(ref.frequencies) | set(seen))
                total = max(len(seen), 1)
                now_freq = [seen.count(c) / total for c in cats]
                for label, shares, color in (
                    ("reference", [ref.frequencies.get(c, 0.0) for c in cats], "#1f77b4"),
                    ("current", now_freq, "#d62728"),
                ):
                    fig.add_trace(
                        go.Bar(
                            x=cats,
                            y=shares,
                            name=label,
                            legendgroup=label,
                            showlegend=first,
                            marker_color=color,
                        ),
                        row=row,
                        col=col,
                    )
        fig.update_layout(barmode="overlay", height=260 * rows, margin={"t": 40})
        figures.append((f"Reference ({production.ref}) vs the latest {data.current_events:,} events", fig))

    psi = go.Figure()
    ks = go.Figure()
    for vw in data.windows:
        by: dict[tuple[str, str], list[WindowStat]] = {}
        for w in vw.windows:
            by.setdefault((w.detector, w.feature), []).append(w)
        for (detector, feature), ws in sorted(by.items()):
            ws.sort(key=lambda w: w.window_end_ts)
            ends = [_time(w.window_end_ts) for w in ws]
            label = f"v{vw.version} {feature}"
            if detector == "psi":
                psi.add_trace(
                    go.Scatter(x=ends, y=[w.statistic for w in ws], mode="lines+markers", name=label)
                )
            elif detector == "ks":
                pv = [max(w.p_value if w.p_value is not None else 1.0, 1e-300) for w in ws]
                ks.add_trace(go.Scatter(x=ends, y=pv, mode="lines+markers", name=label))
    for chart, lines, title, kwargs in (
        (psi, ((PSI_WARNING, "warning"), (PSI_CRITICAL, "critical")), "PSI per window", {}),
        (ks, ((KS_ALPHA, "alpha"),), "KS p-value per window", {"yaxis_type": "log"}),
    ):
        for level, text in lines:
            chart.add_hline(y=level, line_dash="dash", line_color="#888", annotation_text=text)
        chart.update_layout(height=380, margin={"t": 30}, xaxis_title="window end (event time)", **kwargs)
        figures.append((title, chart))

    timeline = go.Figure()
    severity_color = {"warning": "#ff9900", "critical": "#d62728"}
    for severity, color in severity_color.items():
        picked = [
            a for a in data.alerts if a.severity == severity and a.detector not in ("adwin", "error_rate")
        ]
        timeline.add_trace(
            go.Scatter(
                x=[_time(a.window_end_ts) for a in picked],
                y=[a.feature for a in picked],
                mode="markers",
                marker={"color": color, "size": 10},
                name=f"{severity} alert",
                text=[a.message for a in picked],
            )
        )
    changes = [a for a in data.alerts if a.detector in ("adwin", "error_rate")]
    timeline.add_trace(
        go.Scatter(
            x=[_time(a.window_end_ts) for a in changes],
            y=[a.feature for a in changes],
            mode="markers",
            marker={"symbol": "diamond", "size": 12, "color": "#9467bd"},
            name="change point (ADWIN / error rate)",
            text=[a.message for a in changes],
        )
    )
    timeline.update_layout(height=380, margin={"t": 30}, xaxis_title="event time")
    figures.append(("Alerts and change points", timeline))

    versions = go.Figure(
        go.Scatter(
            x=[e.ts for e in data.events],
            y=[f"v{e.version}" for e in data.events],
            mode="markers+text",
            text=[e.kind.replace("_", " ") for e in data.events],
            textposition="top center",
            marker={"size": 11},
            name="lifecycle",
        )
    )
    versions.update_layout(height=300, margin={"t": 30}, xaxis_title="wall clock", showlegend=False)
    figures.append(("Model versions: registered, canary, shadow, promoted, rolled back", versions))

    parts = [
        f"<h2>{html.escape(title)}</h2>"
        + fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, (title, fig) in enumerate(figures)
    ]
    rows_html = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                _time(a.window_end_ts).isoformat(),
                f"{a.model}:{a.version}",
                a.severity,
                a.detector,
                a.feature,
                a.message,
            )
        )
        + "</tr>"
        for a in sorted(data.alerts, key=lambda a: a.window_end_ts)
    )
    since = f" since {_time(data.since).isoformat()}" if data.since is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Driftline report: {html.escape(data.model)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}</style>
</head><body>
<h1>Driftline drift report: {html.escape(data.model)}</h1>
<p>Generated {data.generated_at.isoformat(timespec="seconds")}{since}.
Production: {html.escape(production.ref)}.
{len(data.alerts)} alerts, {sum(len(v.windows) for v in data.windows)} closed drift windows,
{len(data.versions)} versions. Score drift is listed as <code>{SCORE_FEATURE}</code>.</p>
{"".join(parts)}
<h2>Alerts</h2>
<table><tr><th>window end</th><th>model</th><th>severity</th><th>detector</th><th>feature</th>
<th>message</th></tr>
{rows_html}</table>
<script>window.driftlineReport = {orjson.dumps({"figures": len(figures)}).decode()};</script>
</body></html>
"""
