"""What every CLI module shares: the consoles, settings loading and the CLI's error type."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError
from rich.console import Console

from driftline.errors import DriftlineError
from driftline.redaction import install_scrubber
from driftline.services import require
from driftline.settings import Settings
from stream.client_logs import quiet_library_logs

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

console = Console()
err_console = Console(stderr=True)


class CliError(DriftlineError):
    """An expected failure: printed as one line, exit code 1."""


def settings(*services: Literal["kafka", "redis"]) -> Settings:
    """The settings, after checking that each of ``services`` answers (one-line error if not)."""
    try:
        s = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    install_scrubber(s.secrets())  # no log line of this process will carry one
    return require(s, *services)


@functools.cache
def _warn_unsigned() -> None:
    logging.getLogger("driftline").warning(
        "DRIFTLINE_REGISTRY_KEY is not set: model versions are neither signed nor verified, so "
        "anyone with write access to Redis can swap the served model"
    )


def announce_signing(s: Settings) -> None:
    """Once a long-running command has started (after its start-up checks, so that a failed
    start stays one line): a warning, once, when the registry is unsigned."""
    if s.registry_key is None:
        _warn_unsigned()


def configure_logging(level: int = logging.INFO) -> None:
    """Our log lines at ``level``; Kafka clients', Faust's and aiokafka's at warning, rate-limited."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    quiet_library_logs()


def serve_metrics(port: int, registry: CollectorRegistry) -> None:
    """Prometheus metrics (and ``/healthz``) on ``port`` (0: off)."""
    if not port:
        return
    from stream.metrics import serve_metrics as serve

    with metrics_port_errors(port):
        serve(port, registry)


@contextmanager
def metrics_port_errors(port: int) -> Iterator[None]:
    """A taken metrics port is a one-line error, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on port {port} ({exc.strerror or exc}): another process uses it; "
            "pick a free one with --metrics-port (0 = off)"
        ) from None


@contextmanager
def reading(path: Path | None) -> Iterator[None]:
    """A file that cannot be read or decoded is a one-line error naming it."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a file") from None
    except PermissionError as exc:
        raise CliError(f"{exc.filename or path}: {exc.strerror} (check its permissions)") from None
