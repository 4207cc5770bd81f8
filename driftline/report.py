"""``driftline report``: a self-contained HTML drift report, drawn from what the system recorded.

`gather` reads, never re-runs: the model's versions and lifecycle events (registry, Redis), the
drift windows the workers closed (``{<ns>:drift:<model>:<version>}:~history``, Redis), the
incidents (their latest state, ``{<ns>:drift:<model>:<version>}:~incidents``, Redis; their
lifecycle events, ``<prefix>.alerts``, Kafka),
the retrainer's steps (``<prefix>.models``), the per-signal alerts (``<prefix>.signals``, Kafka)
and the latest events (``<prefix>.events``, Kafka) for the current distribution of each feature.
`render` turns that `ReportData` into one HTML page of plotly charts (plotly.js inlined, so the
file opens offline) that leads with the incidents - one row each: state, severity, features,
opened/resolved, what the retrainer did - and their timeline; then per feature the reference
against the current histogram, PSI and the KS p-value over time with their thresholds, a timeline
of alerts, change points (ADWIN, error rate) and model versions, and the alerts as a table.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field, ValidationError

from detectors.alerts import DriftAlert
from detectors.incidents import DriftIncident, IncidentEvent
from detectors.signals import SCORE_FEATURE, WindowStat
from driftline.settings import Settings
from driftline.wiring import model_registry, redis_client
from inference.metadata import ModelEvent, ModelVersion
from stream.drift import all_incidents, bins_key, history_key
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
    incidents: list[DriftIncident] = Field(default_factory=list)
    """Each incident's latest state, oldest first."""
    bins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per monitored input of production, its latest closed drift window as PSI binned it (labels,
    reference proportions, counts): the current distribution of inputs events do not carry
    (the feature view's aggregates)."""
    incident_events: list[IncidentEvent] = Field(default_factory=list)
    retrains: dict[str, list[str]] = Field(default_factory=dict)
    """Incident id -> what the retrainer did about it (its steps for jobs the incident started)."""


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
    for msg in read_messages(s.kafka_client_config(), topics.signals):
        try:
            alert = DriftAlert.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue
        if alert.model == model and _after(alert.window_end_ts, since):
            alerts.append(alert)
    incidents = []
    for raw in all_incidents(r, s.topic_prefix, [(model, v.version) for v in versions]):
        try:
            inc = DriftIncident.model_validate_json(raw)
        except ValidationError:
            continue
        if inc.model == model and _after(inc.latest_window.end_ts, since):
            incidents.append(inc)
    incidents.sort(key=lambda i: i.first_window.start_ts)
    lifecycle = []
    for msg in read_messages(s.kafka_client_config(), topics.alerts):
        try:
            step = IncidentEvent.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue
        if step.model == model:
            lifecycle.append(step)
    production = next((v for v in reversed(versions) if v.stage == "production"), versions[-1])
    bins = {}
    binned: dict[Any, Any] = r.hgetall(bins_key(s.topic_prefix, model, production.version))
    for name, raw in binned.items():
        try:
            bins[_text(name)] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
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
        incidents=incidents,
        bins=bins,
        incident_events=lifecycle,
        retrains=_retrains(s, model, {i.id for i in incidents}),
    )


def _retrains(s: Settings, model: str, ids: set[str]) -> dict[str, list[str]]:
    """Per incident, the retrainer's steps for the job it triggered (from ``<prefix>.models``)."""
    out: dict[str, list[str]] = {}
    for msg in read_messages(s.kafka_client_config(), Topics(s.topic_prefix).models):
        try:
            doc = orjson.loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get("name") != model:
            continue
        detail = doc.get("detail") if isinstance(doc.get("detail"), dict) else {}
        trigger = detail.get("trigger") if isinstance(detail, dict) else None
        iid = trigger.get("incident_id") if isinstance(trigger, dict) else None
        if iid in ids and str(doc.get("kind", "")).startswith("retrain_"):
            out.setdefault(iid, []).append(
                f"{str(doc['kind']).removeprefix('retrain_')}: {doc.get('reason', '')}"
            )
    return out


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _after(ts: float, since: float | None) -> bool:
    return since is None or ts >= since


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def render(data: ReportData) -> str:
    """The report as one self-contained HTML page."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures: list[tuple[str, Any]] = []
    if data.incidents:
        figures.append(("Incidents over event time", _incident_timeline(data)))
    production = next((v for v in reversed(data.versions) if v.stage == "production"), data.versions[-1])
    # Raw inputs from the latest events; the others (the view's aggregates, which events do not
    # carry) from the latest drift window, as PSI binned it.
    names = [n for n in sorted(production.reference) if n in data.current or n in data.bins]
    if names:
        cols = 2
        rows = (len(names) + cols - 1) // cols
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
        for i, name in enumerate(names):
            ref = production.reference[name]
            row, col = i // cols + 1, i % cols + 1
            values = data.current.get(name, [])
            first = i == 0
            if name not in data.current or not any(v is not None for v in values):
                b = data.bins.get(name)
                if b is None:
                    continue
                total = max(sum(b["counts"]), 1)
                for label, shares, color in (
                    ("reference", b["reference"], "#1f77b4"),
                    ("current", [c / total for c in b["counts"]], "#d62728"),
                ):
                    fig.add_trace(
                        go.Bar(
                            x=b["labels"], y=shares, name=label, legendgroup=label, showlegend=first,
                            marker_color=color,
                        ),
                        row=row,
                        col=col,
                    )  # fmt: skip
                continue
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

    # Lifecycle steps of one version come seconds apart: labels alternate above and below their
    # markers, and the full text is in the hover, so they never print over each other.
    positions = ("top center", "bottom center")
    versions = go.Figure(
        go.Scatter(
            x=[e.ts for e in data.events],
            y=[f"v{e.version}" for e in data.events],
            mode="markers+text",
            text=[e.kind.replace("_", " ") for e in data.events],
            textposition=[positions[i % 2] for i in range(len(data.events))],
            hovertext=[f"v{e.version} {e.kind} {e.ts.isoformat(timespec='seconds')}" for e in data.events],
            marker={"size": 11},
            name="lifecycle",
        )
    )
    versions.update_layout(
        height=120 + 60 * max(len({e.version for e in data.events}), 1),
        margin={"t": 30},
        xaxis_title="wall clock",
        showlegend=False,
        yaxis={"range": [-0.7, max(len({e.version for e in data.events}), 1) - 0.3]},
    )
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
    incidents_html = _incident_table(data)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Driftline report: {html.escape(data.model)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}</style>
</head><body>
<h1>Driftline drift report: {html.escape(data.model)}</h1>
<p>Generated {data.generated_at.isoformat(timespec="seconds")}{since}.
Production: {html.escape(production.ref)}.
{len(data.incidents)} incidents ({sum(i.state == "open" for i in data.incidents)} open) from
{len(data.alerts)} detector signals, {sum(len(v.windows) for v in data.windows)} closed drift windows,
{len(data.versions)} versions. Score drift is listed as <code>{SCORE_FEATURE}</code>, the error
stream as <code>__error__</code>.</p>
<h2>Incidents</h2>
{incidents_html}
{"".join(parts)}
<h2>Detector signals (the incidents' detail)</h2>
<table><tr><th>window end</th><th>model</th><th>severity</th><th>detector</th><th>feature</th>
<th>message</th></tr>
{rows_html}</table>
<script>window.driftlineReport = {orjson.dumps({"figures": len(figures)}).decode()};</script>
</body></html>
"""


def _incident_table(data: ReportData) -> str:
    if not data.incidents:
        return "<p>No incidents.</p>"
    rows = []
    for inc in data.incidents:
        features = ", ".join(f"{f.feature} ({'/'.join(f.detectors)})" for f in inc.features)
        if inc.state == "resolved" and inc.resolution == "superseded":
            ended = f"superseded by v{inc.superseded_by}"
        elif inc.state == "resolved" and inc.resolved_ts is not None:
            ended = f"quiet since {_time(inc.resolved_ts).isoformat(timespec='minutes')}"
        else:
            ended = "open"
        retrained = "; ".join(data.retrains.get(inc.id, [])) or "no retrain started"
        cells = (
            inc.id[:12], f"{inc.model}:{inc.version}", inc.state, inc.severity, features,
            _time(inc.first_window.start_ts).isoformat(timespec="minutes"), ended, retrained, inc.summary,
        )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("incident", "model", "state", "severity", "features (detectors)", "since (event time)",
                  "ended", "retrainer", "summary")
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _event_ts(e: IncidentEvent) -> float:
    """Event time of a lifecycle event: its resolution, or the incident's latest window then."""
    inc = e.incident
    return (
        inc.resolved_ts if e.kind == "resolved" and inc.resolved_ts is not None else inc.latest_window.end_ts
    )


def _incident_timeline(data: ReportData) -> Any:
    """One bar per incident from its first window to its resolution (or its latest window),
    with a marker per lifecycle event."""
    import plotly.graph_objects as go

    fig = go.Figure()
    color = {"warning": "#ff9900", "critical": "#d62728"}
    for inc in data.incidents:
        end = inc.resolved_ts if inc.resolved_ts is not None else inc.latest_window.end_ts
        label = f"v{inc.version} {inc.id[:8]}"
        fig.add_trace(
            go.Scatter(
                x=[_time(inc.first_window.start_ts), _time(max(end, inc.first_window.end_ts))],
                y=[label, label],
                mode="lines",
                line={"width": 14, "color": color[inc.severity]},
                name=label,
                hovertext=inc.summary,
                showlegend=False,
            )
        )
    if data.incident_events:
        by_id = {i.id: i for i in data.incidents}
        shown = [e for e in data.incident_events if e.incident_id in by_id]
        fig.add_trace(
            go.Scatter(
                x=[_time(_event_ts(e)) for e in shown],
                y=[f"v{e.version} {e.incident_id[:8]}" for e in shown],
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 18, "color": "#333"},
                text=[f"{e.kind}: {'; '.join(e.changes) or e.summary}" for e in shown],
                name="lifecycle event",
            )
        )  # fmt: skip
    fig.update_layout(height=120 + 50 * len(data.incidents), margin={"t": 30}, xaxis_title="event time")
    return fig
