"""``driftline outcomes``, ``driftline retrainer`` and ``driftline retrain``: the loop after scoring."""

from __future__ import annotations

import logging
import signal
import time
from typing import Annotated

import typer

from driftline.cli_common import (
    CliError,
    announce_signing,
    configure_logging,
    console,
    err_console,
    serve_metrics,
    settings,
)
from stream.client_logs import quiet_library_logs


def outcomes(
    exit_when_idle: Annotated[float | None, typer.Option(min=0.1, help="Exit after N idle seconds.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Default DRIFTLINE_METRICS_PORT; 0 = off.")
    ] = None,
) -> None:
    """Join labels to predictions: outcomes, live accuracy, error-rate (concept drift) alerts."""
    configure_logging()
    s = settings("kafka", "redis")
    from driftline.loop import build_joiner

    joiner = build_joiner(s)
    joiner.cfg.exit_when_idle = exit_when_idle
    metrics_port = s.metrics_port if metrics_port is None else metrics_port
    serve_metrics(metrics_port, joiner.metrics.registry)
    signal.signal(signal.SIGTERM, joiner.stop)
    signal.signal(signal.SIGINT, joiner.stop)
    err_console.print(
        f"outcomes: joining {s.topic_prefix}.predictions + labels (wait {s.label_wait_seconds} s), "
        f"metrics :{metrics_port or 'off'}",
        highlight=False,
    )
    announce_signing(s)
    joiner.run()


def retrainer(
    log_level: Annotated[str, typer.Option(help="Logging level (Faust's and Driftline's).")] = "WARNING",
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Default DRIFTLINE_METRICS_PORT; 0 = off.")
    ] = None,
) -> None:
    """Run the retraining consumer (a Faust worker) until SIGTERM: drift -> train -> canary -> promote."""
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(
            f"{log_level!r}: use debug, info, warning or error", param_hint="--log-level"
        )
    s = settings("kafka", "redis")  # before Faust's slow import: a stack that is down fails at once
    from faust import Worker
    from prometheus_client import CollectorRegistry

    from driftline.loop import build_retrainer

    quiet_library_logs(logging.getLevelName(level))  # --log-level is Faust's level too

    registry = CollectorRegistry()
    port = s.metrics_port if metrics_port is None else metrics_port
    serve_metrics(port, registry)
    app = build_retrainer(s, registry)
    err_console.print(
        f"retrainer: app {app.conf.id}, cooldown {s.retrain_cooldown_seconds:.0f} s", highlight=False
    )
    announce_signing(s)
    Worker(app, loglevel=level).execute_from_commandline()


def retrain(
    model: Annotated[str, typer.Argument(help="Model name, e.g. fraud.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "requested from the CLI",
) -> None:
    """Ask the retrainer to retrain MODEL now (one job at a time per model; no cooldown)."""
    import orjson
    from confluent_kafka import Producer

    from inference.registry import check_model_name
    from inference.retrain_policy import RetrainTrigger
    from stream.producer import PRODUCER_DEFAULTS
    from stream.topics import Topics

    try:
        check_model_name(model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="MODEL") from None
    s = settings("kafka")
    topic = Topics(s.topic_prefix).retrain
    trigger = RetrainTrigger(model=model, kind="manual", reason=reason, ts=time.time())
    errors: list[str] = []
    producer = Producer({**s.kafka_client_config(), **PRODUCER_DEFAULTS})
    producer.produce(
        topic,
        orjson.dumps(trigger.model_dump()),
        model.encode(),
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    if producer.flush(15) or errors:
        raise CliError(f"could not send the request to {topic}: {'; '.join(errors) or 'not acknowledged'}")
    console.print(f"retrain of {model} requested on {topic}; watch `driftline tail models`", highlight=False)
