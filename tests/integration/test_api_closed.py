"""`driftline api` is closed by default: no token, no public address; HTTPS by configuration."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from driftline.certs import ensure_server_cert
from tests.helpers import run_cli
from tests.private_stack import free_port

pytestmark = pytest.mark.integration

TOKEN = "closed-api-token-7c1d"


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, (result.stdout, result.stderr)
    assert lines[0].startswith("driftline: error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_public_address_without_token_is_refused(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "DRIFTLINE_API_TOKEN"}
    line = _one_line_error(run_cli("api", "--host", "0.0.0.0", "--port", str(free_port()), env=env))
    assert "without a token" in line and "DRIFTLINE_API_TOKEN" in line


def test_tls_needs_both_files(cli_env: dict[str, str], tmp_path: Path) -> None:
    cert = ensure_server_cert(tmp_path, "api")
    env = {**cli_env, "DRIFTLINE_API_TLS_CERT": str(cert.cert)}
    assert "DRIFTLINE_API_TLS_KEY" in _one_line_error(run_cli("api", "--port", str(free_port()), env=env))
    env["DRIFTLINE_API_TLS_KEY"] = str(tmp_path / "missing.key")
    assert "missing.key" in _one_line_error(run_cli("api", "--port", str(free_port()), env=env))


def _get(url: str, ctx: ssl.SSLContext | None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_public_https_api_with_token(cli_env: dict[str, str], tmp_path: Path) -> None:
    cert = ensure_server_cert(tmp_path, "api")
    port = free_port()
    env = {
        **cli_env,
        "DRIFTLINE_API_TOKEN": TOKEN,
        "DRIFTLINE_API_TLS_CERT": str(cert.cert),
        "DRIFTLINE_API_TLS_KEY": str(cert.key),
    }
    cmd = [sys.executable, "-c", "from driftline.cli import main; main()", "api", "--host", "0.0.0.0"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))  # the generated CA, verified
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if _get(f"{base}/healthz", ctx)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the API did not answer over HTTPS"
            time.sleep(0.5)
        status, body = _get(f"{base}/models", ctx)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert _get(f"{base}/models", ctx, token="wrong")[0] == 401
        assert _get(f"{base}/models", ctx, token=TOKEN)[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/healthz", None)  # plain HTTP is not served
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"{base}/healthz", ssl.create_default_context())  # nor trusted without the CA
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert "https://0.0.0.0" in output and TOKEN not in output
