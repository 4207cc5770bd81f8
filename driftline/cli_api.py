"""``driftline api``: the HTTP API (FastAPI under uvicorn)."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from driftline.cli_common import CliError, err_console, settings


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: api_host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: api_port).")] = None,
) -> None:
    """Serve the HTTP API (predict, features, models, drift, alerts, health, metrics) until SIGTERM."""
    import uvicorn

    from driftline.wiring import build_api

    s = settings("redis")
    host = host or s.api_host
    port = port or s.api_port
    app = build_api(s)
    # Bind here, so a taken port or a bad host is a one-line error, not a uvicorn log and exit.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CliError(
            f"cannot listen on {host}:{port} ({reason}): another process uses it? pick one with --port"
        ) from None
    err_console.print(
        f"api: http://{host}:{port} (docs /docs), prefix {s.topic_prefix}, "
        f"token {'required' if s.api_token else 'off'}",
        highlight=False,
    )
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])
