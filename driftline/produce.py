"""Wiring for ``driftline produce``: sources -> EventProducer, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from driftline.errors import DriftlineError
from driftline.schema import label_field_hint
from driftline.services import require
from driftline.settings import Settings
from stream.events import encode_event
from stream.file_source import FileFormatError, read_events, validate_file
from stream.producer import DeliveryTracker, EventProducer, produce_synthetic
from stream.synthetic import DriftSchedule, FraudGenerator
from stream.topics import Topics


class BadInputFile(DriftlineError):
    pass


@contextmanager
def progress_bar(console: Console, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A bar with events/s on a terminal; nothing when output is redirected."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} events/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=total, rate=0.0)

        def advance(k: int) -> None:
            progress.advance(task, k)
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, rate=progress.tasks[task].completed / elapsed)

        yield advance


def produce_generated(
    s: Settings,
    n: int,
    rate: float,
    seed: int,
    entities: int,
    schedule: DriftSchedule,
    label_delay: int,
    start_ts: float,
    console: Console,
    run_id: str | None = None,
) -> DeliveryTracker:
    topics = Topics(s.topic_prefix)
    gen = FraudGenerator(seed=seed, entities=entities, schedule=schedule, start_ts=start_ts)
    if run_id is not None:
        gen.run_id = run_id  # event ids are "<run_id>-<index>"
    producer = EventProducer(s.kafka_client_config())
    with progress_bar(console, n, "producing") as advance:
        produce_synthetic(producer, gen.batches(n), topics.events, topics.labels, label_delay, rate, advance)
    return producer.flush()


def produce_file(s: Settings, path: Path, label_field: str | None, console: Console) -> DeliveryTracker:
    """Validate the whole file first, so a bad file sends nothing; then send it."""
    good, bad, errors = validate_file(path, label_field)
    if bad:
        more = f" ({bad} bad lines in all; fix them and re-run)" if bad > 1 else ""
        raise BadInputFile(f"{errors[0]}{more}; nothing was sent")
    if label_field is None:
        hint = label_field_hint(path)
        if hint:  # sent as a feature, the label would leak into the model's inputs
            console.print(f"hint: {hint}", style="yellow", highlight=False)
    topics = Topics(s.topic_prefix)
    producer = EventProducer(require(s, "kafka").kafka_client_config())
    with progress_bar(console, good, f"producing {path.name}") as advance:
        for record in read_events(path, label_field):
            if isinstance(record, FileFormatError):  # the file changed under us
                raise BadInputFile(f"{record}; the lines before it were sent")
            producer.send(topics.events, record.event.entity_id, encode_event(record.event))
            if record.label is not None:
                producer.send(topics.labels, record.label.event_id, encode_event(record.label))
            advance(1)
    return producer.flush()
