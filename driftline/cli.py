"""The ``driftline`` command line. Every error ends as one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from confluent_kafka.admin import AdminClient
from rich.table import Table

from driftline.cli_api import api
from driftline.cli_common import CliError, configure_logging, console, err_console, reading, settings
from driftline.cli_loop import outcomes, retrain, retrainer
from driftline.cli_models import features_app, models_app, schema_app, train, worker
from driftline.cli_report import report
from driftline.errors import DriftlineError
from driftline.redaction import scrub_known
from driftline.services import require
from driftline.settings import Settings
from driftline.stack import LocalStack, ServiceStatus

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Driftline: streaming ML monitoring on Kafka, Redis and ONNX.",
)
stack_app = typer.Typer(no_args_is_help=True, help="Run the local Kafka + Redis stack.")
topics_app = typer.Typer(no_args_is_help=True, help="Create and list Driftline's topics.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(models_app, name="models")
app.add_typer(features_app, name="features")
app.add_typer(schema_app, name="schema")
app.command()(train)
app.command()(worker)
app.command()(outcomes)
app.command()(retrainer)
app.command()(retrain)
app.command()(api)
app.command()(report)


# ---- stack ---------------------------------------------------------------------------------
SECURE_HELP = (
    "The secured stack: SASL_SSL Kafka, TLS-only Redis with ACL users (files in <stack_dir>/secure)."
)


@stack_app.command("up")
def stack_up(
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each service.")] = 120,
    secure: Annotated[bool, typer.Option("--secure", help=SECURE_HELP)] = False,
    kafka_brokers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=9,
            help="KRaft nodes (each broker and controller) on consecutive ports from the bootstrap "
            "port; more than one: new topics get min(N, 3) replicas and min.insync.replicas one less. "
            "Default: what the stack ran since its last `down`, else 1.",
        ),
    ] = None,
    redis_cluster: Annotated[
        bool,
        typer.Option("--redis-cluster", help="Also a Redis Cluster: 3 masters + 3 replicas on 6 ports."),
    ] = False,
    redis_cluster_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=55529,
            help="The Redis Cluster's first port (bus: port + 10000; implies --redis-cluster); default 7000.",
        ),
    ] = None,
) -> None:
    """Start Kafka (KRaft) and Redis, or reuse them if they already run. Without options, the
    stack's shape since its last `down` (one broker and one Redis at first)."""
    s = settings()
    recorded = LocalStack(s, secure=secure).recorded_shape()
    if redis_cluster and redis_cluster_port is None:
        redis_cluster_port = recorded.redis_cluster_port or 7000
    shape = recorded.with_options(kafka_brokers, redis_cluster_port)
    stack = LocalStack(s, log=lambda m: err_console.print(m, highlight=False), secure=secure, shape=shape)
    _print_status(stack.up(timeout))
    console.print(f"bootstrap: {stack.kafka_bootstrap}  redis: {stack.redis_display}", highlight=False)
    if stack.security is not None:
        _print_secure_config(stack.security.public_settings(stack.s), stack.security.write_role_envs())
    if stack.redis_cluster_url:
        # The URL form of a cluster's startup nodes (driftline.redis_cluster): give every node,
        # so a client can start while one is down.
        console.print(f"redis cluster: {stack.redis_cluster_url}", highlight=False)


def _print_secure_config(public: dict[str, object], envs: Path) -> None:
    import yaml

    console.print("\n# driftline.yaml for the secured stack (no secrets in it):", highlight=False)
    console.print(yaml.safe_dump(public, sort_keys=False).rstrip(), highlight=False, markup=False)
    console.print(
        f"\n# Each component's secrets (its Redis user and password, the Kafka password, the registry\n"
        f"# key) are in {envs}/<role>.env (0600), roles: driftline (CLI, retrainer), worker,\n"
        f"# outcomes, api. For example:  set -a; . {envs}/worker.env; set +a; driftline worker",
        highlight=False,
        markup=False,
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop the processes that `stack up` started, plain and secured (and nothing else)."""
    s = settings()
    stopped = LocalStack(s).down() + LocalStack(s, secure=True).down()
    console.print("stopped " + ", ".join(stopped) if stopped else "nothing to stop")


@stack_app.command("status")
def stack_status(secure: Annotated[bool, typer.Option("--secure", help=SECURE_HELP)] = False) -> None:
    """Show each service, its address and whether it answers (exit 1 if one does not)."""
    statuses = LocalStack(settings(), secure=secure).status()
    _print_status(statuses)
    if not all(s.answering for s in statuses):
        raise typer.Exit(1)


def _print_status(statuses: list[ServiceStatus]) -> None:
    table = Table("service", "address", "pid", "state", "role")
    for s in statuses:
        table.add_row(s.name, s.address, str(s.pid or "-"), s.state, s.role)
    console.print(table)


# ---- topics --------------------------------------------------------------------------------
def _admin(s: Settings) -> AdminClient:
    return AdminClient(s.kafka_client_config())


@topics_app.command("create")
def topics_create(
    partitions: Annotated[int | None, typer.Option(min=1, help="Default: settings.partitions (6).")] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(min=-1, help="Default: settings.replication_factor (-1: the broker's default)."),
    ] = None,
) -> None:
    """Create the prefix's topics (idempotent; existing topics are kept)."""
    if replication_factor == 0:
        raise CliError("--replication-factor is -1 (the broker's default) or at least 1")
    from stream.topics import Topics, create_topics

    s = settings("kafka")
    statuses = create_topics(
        _admin(s),
        Topics(s.topic_prefix),
        partitions or s.partitions,
        replication_factor or s.replication_factor,
    )
    table = Table("topic", "partitions", "")
    for t in statuses:
        table.add_row(t.name, str(t.partitions), "created" if t.created else "exists")
    console.print(table)


@topics_app.command("list")
def topics_list() -> None:
    """Show the prefix's topics with their partition counts."""
    from stream.topics import Topics, describe_topics

    s = settings("kafka")
    table = Table("topic", "partitions")
    for t in describe_topics(_admin(s), Topics(s.topic_prefix).all()):
        table.add_row(t.name, str(t.partitions) if t.partitions else "[red]missing[/red]")
    console.print(table)


# ---- produce -------------------------------------------------------------------------------
@app.command()
def produce(
    file: Annotated[Path | None, typer.Option(help="JSONL or CSV file of events.")] = None,
    synthetic: Annotated[str | None, typer.Option(help="Generator name: fraud.")] = None,
    n: Annotated[int, typer.Option(min=1, help="Synthetic events to send.")] = 10_000,
    rate: Annotated[float, typer.Option(min=0, help="Events/s; 0 = as fast as possible.")] = 0,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    entities: Annotated[int, typer.Option(min=1, help="Distinct entities.")] = 1000,
    drift: Annotated[list[str] | None, typer.Option(help="covariate@N or concept@M (repeatable).")] = None,
    drift_width: Annotated[int, typer.Option(min=0, help="Gradual drift over W events.")] = 0,
    drift_shift: Annotated[float, typer.Option(help="Covariate shift in std devs.")] = 1.0,
    label_delay: Annotated[int, typer.Option(min=0, help="Send each label N events later.")] = 100,
    label_field: Annotated[str | None, typer.Option(help="--file: column holding the label.")] = None,
    start_ts: Annotated[
        datetime | None, typer.Option(help="Synthetic: first event time (UTC); default: the last is now.")
    ] = None,
) -> None:
    """Send events (and labels) to <prefix>.events / <prefix>.labels."""
    from driftline.produce import produce_file, produce_generated
    from stream.synthetic import DriftSchedule, FraudGenerator

    if (file is None) == (synthetic is None):
        raise typer.BadParameter("give exactly one of --file PATH or --synthetic fraud")
    s = settings()
    if file is not None:
        with reading(file):
            tally = produce_file(s, file, label_field, console)  # checks the broker after the file
    else:
        if synthetic != "fraud":
            raise typer.BadParameter(
                f"unknown generator {synthetic!r} (available: fraud)", param_hint="--synthetic"
            )
        try:
            schedule = DriftSchedule.parse(drift or [], width=drift_width, shift=drift_shift)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--drift") from None
        if start_ts is not None:
            start = start_ts.replace(tzinfo=start_ts.tzinfo or UTC).timestamp()
        else:
            # Synthetic event time runs at 2 events/s, usually far ahead of the wall clock: end
            # the stream now, so no event is refused as future_event (DRIFTLINE_MAX_FUTURE_SECONDS).
            start = datetime.now(UTC).timestamp() - n * FraudGenerator.mean_gap_s
        tally = produce_generated(
            require(s, "kafka"), n, rate, seed, entities, schedule, label_delay, start, console
        )
    console.print(
        f"sent {tally.sent}, delivered {tally.delivered}, failed {tally.failed + tally.pending}",
        highlight=False,
    )
    if tally.failed or tally.pending or tally.errors:
        raise CliError("delivery failed: " + "; ".join(tally.errors or ["unacknowledged messages"]))


# ---- tail ----------------------------------------------------------------------------------
@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Short name (events, alerts, ...) or full topic name.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the earliest offset.")
    ] = False,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="Stop after N messages.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    idle_timeout: Annotated[float | None, typer.Option(min=0, help="Stop after N idle seconds.")] = None,
) -> None:
    """Print a topic's messages as they arrive."""
    from stream.tail import tail as tail_topic
    from stream.topics import Topics

    s = settings("kafka")
    name = Topics(s.topic_prefix).resolve(topic)
    try:
        for msg in tail_topic(s.kafka_client_config(), name, from_beginning, max_messages, idle_timeout):
            if as_json:
                sys.stdout.write(orjson.dumps(msg.as_json()).decode() + "\n")
                sys.stdout.flush()
            else:
                console.print(f"[dim]{msg.topic}[{msg.partition}]@{msg.offset}[/dim] [bold]{msg.key}[/bold]")
                console.print_json(data=msg.value) if isinstance(msg.value, dict | list) else console.print(
                    msg.value
                )
    except LookupError as exc:
        raise CliError(f"{exc.args[0]} (run `driftline topics create`)") from None


alerts_app = typer.Typer(no_args_is_help=True, help="Drift incidents and the signals behind them.")
app.add_typer(alerts_app, name="alerts")
_KIND_COLOR = {"opened": "red", "updated": "yellow", "resolved": "green"}


@alerts_app.command("tail")
def alerts_tail(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the earliest offset.")
    ] = False,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="Stop after N messages.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON message per line.")] = False,
    idle_timeout: Annotated[float | None, typer.Option(min=0, help="Stop after N idle seconds.")] = None,
    signals: Annotated[
        bool, typer.Option("--signals", help="Every detector signal (<prefix>.signals) instead of incidents.")
    ] = False,
) -> None:
    """Drift incidents as they open, update and resolve, one line each (--signals: every alert)."""
    from stream.tail import tail as tail_topic
    from stream.topics import Topics

    s = settings("kafka")
    topics = Topics(s.topic_prefix)
    topic = topics.signals if signals else topics.alerts
    try:
        for msg in tail_topic(s.kafka_client_config(), topic, from_beginning, max_messages, idle_timeout):
            a = msg.value if isinstance(msg.value, dict) else {}
            if as_json:
                sys.stdout.write(orjson.dumps(a).decode() + "\n")
                sys.stdout.flush()
                continue
            model = f"{a.get('model')}:{a.get('version')}"
            if signals:
                color = "red" if a.get("severity") == "critical" else "yellow"
                line = (
                    f"[{color}]{a.get('severity', '?'):8}[/{color}] {a.get('ts', '')}  {model}  "
                    f"{a.get('detector', '?'):5}  {a.get('message', msg.value)}"
                )
            else:
                kind = str(a.get("kind", "?"))
                color = _KIND_COLOR.get(kind, "white")
                changes = "; ".join(a.get("changes") or [])
                line = (
                    f"[{color}]{kind:8}[/{color}] {a.get('severity', '?'):8} {a.get('ts', '')}  {model}  "
                    f"{str(a.get('incident_id', '?'))[:12]}  {a.get('summary', msg.value)}"
                    + (f"  ({changes})" if changes and kind != "opened" else "")
                )
            console.print(line, highlight=False)
    except LookupError as exc:
        raise CliError(f"{exc.args[0]} (run `driftline topics create`)") from None


# ---- demo ----------------------------------------------------------------------------------
@app.command()
def demo(
    n: Annotated[
        int | None, typer.Option(min=3000, help="Events in the main stream (60,000; --quick 24,000).")
    ] = None,
    rate: Annotated[float | None, typer.Option(min=1, help="Events/s (1,000; --quick 2,000).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A shorter, faster stream (CI).")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the local stack running afterwards.")] = False,
) -> None:
    """The whole loop on the local stack: drift, alerts, retrain, canary, promotion, report."""
    from driftline.demo import run_demo

    default_n, default_rate = (24_000, 2000.0) if quick else (60_000, 1000.0)
    run_demo(settings(), n or default_n, rate or default_rate, keep, console)


def main() -> None:
    """Entry point: one-line errors instead of tracebacks or usage boxes."""
    configure_logging(logging.WARNING)  # long-running commands raise it to info for our loggers
    try:
        code = app(standalone_mode=False, prog_name="driftline")
    except typer.Abort:
        _fail("aborted", 130)
    except DriftlineError as exc:
        _fail(str(exc), 1)
    except OSError as exc:  # an unreadable or unwritable file, a port, a socket
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}", 1)
    except UnicodeDecodeError as exc:
        _fail(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", 1)
    except Exception as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `driftline` or `driftline stack`
            sys.stderr.write((ctx.get_help() if ctx else "") + "\n")
            sys.exit(2)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _fail(exc.format_message().replace("\n", " ") + hint, exc.exit_code)
        if type(exc).__module__.startswith(("confluent_kafka", "cimpl", "redis")):
            # Broker/Redis failures after start-up: a line, not a traceback.
            detail = str(exc).strip() or repr(exc)
            _fail(f"{type(exc).__name__}: {detail} (check `driftline stack status`)", 1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    first, _, rest = scrub_known(message).strip().partition("\n")
    sys.stderr.write(f"driftline: error: {first}\n")
    if rest:  # multi-line context (a log tail) follows the one-line summary
        sys.stderr.write(rest + "\n")
    sys.exit(code)
