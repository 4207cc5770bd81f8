"""What every CLI module shares: the consoles, settings loading and the CLI's error type."""

from __future__ import annotations

from pydantic import ValidationError
from rich.console import Console

from driftline.errors import DriftlineError
from driftline.settings import Settings

console = Console()
err_console = Console(stderr=True)


class CliError(DriftlineError):
    """An expected failure: printed as one line, exit code 1."""


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
