"""``driftline api``: the HTTP API (FastAPI under uvicorn), closed by default.

Bound to anything but a loopback address, the API refuses to start without a token; with
``api_tls_cert``/``api_tls_key`` it serves HTTPS."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from typing import Annotated

import typer

from driftline.cli_common import CliError, announce_signing, err_console, settings
from driftline.services import require
from driftline.settings import Settings

TOKEN_HINT = "set DRIFTLINE_API_TOKEN (e.g. `export DRIFTLINE_API_TOKEN=$(openssl rand -hex 32)`)"


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("api.example")
    (True, True, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def tls_files(s: Settings) -> tuple[str, str] | None:
    """The API's (certificate, key), checked to load, or None for plain HTTP."""
    cert, key = s.api_tls_cert, s.api_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise CliError("HTTPS needs both DRIFTLINE_API_TLS_CERT and DRIFTLINE_API_TLS_KEY (PEM files)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except OSError as exc:
        raise CliError(f"cannot read the API's TLS files {cert}, {key}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise CliError(f"the API's TLS certificate {cert} and key {key} do not load: {exc.reason}") from None
    return str(cert), str(key)


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: api_host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: api_port).")] = None,
) -> None:
    """Serve the HTTP API (predict, features, models, drift, alerts, health, metrics) until SIGTERM."""
    import uvicorn

    from driftline.wiring import build_api

    s = settings()
    host = host or s.api_host
    port = port or s.api_port
    if s.api_token is None and not is_loopback(host):
        raise CliError(
            f"refusing to serve the API on {host} without a token: {TOKEN_HINT}, or use --host 127.0.0.1"
        )
    tls = tls_files(s)
    require(s, "redis")
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
        f"api: {'https' if tls else 'http'}://{host}:{port} (docs /docs), prefix {s.topic_prefix}, "
        f"token {'required' if s.api_token else 'off'}",
        highlight=False,
    )
    announce_signing(s)
    config = uvicorn.Config(
        app,
        log_level="info",
        timeout_graceful_shutdown=10,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    uvicorn.Server(config).run(sockets=[sock])
