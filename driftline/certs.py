"""Throwaway TLS material for the secured local stack and tests: a CA and server certificates.

Made with the ``openssl`` command line (Debian's ``openssl`` package, installed when missing):
a CA (``ca.pem``, ``ca.key``) and, per service, a key and a certificate signed by it for the
given names (``localhost`` and ``127.0.0.1`` by default). Keys are unencrypted PKCS#8 PEM, which
Kafka (``ssl.keystore.type=PEM``), redis-server and uvicorn all read; files are private (0600).
Existing files are reused, so a restarted stack keeps its certificates.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from driftline.errors import DriftlineError

DAYS = "825"


@dataclass(frozen=True)
class ServerCert:
    cert: Path  # the certificate, PEM
    key: Path  # its private key, PKCS#8 PEM, unencrypted
    chain: Path  # key + certificate in one file (Kafka's PEM keystore)


def _openssl(args: Sequence[str], log: Callable[[str], None]) -> None:
    from driftline.stack import debian_binary

    binary = debian_binary("openssl", "openssl", log)
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DriftlineError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def _private(path: Path) -> Path:
    os.chmod(path, 0o600)
    return path


def _new_key(path: Path, log: Callable[[str], None]) -> None:
    # RSA: every TLS stack here (Java's PEM keystore included) reads it.
    _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path)], log)
    _private(path)


def ensure_ca(directory: Path, log: Callable[[str], None] = print) -> Path:
    """The CA certificate in `directory` (``ca.pem``), made with its key when missing."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, key = directory / "ca.pem", directory / "ca.key"
    if ca.exists() and key.exists():
        return ca
    _new_key(key, log)
    _openssl(
        ["req", "-x509", "-new", "-key", str(key), "-sha256", "-days", DAYS,
         "-subj", "/CN=driftline local CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(ca)],
        log,
    )  # fmt: skip
    return ca


def ensure_server_cert(
    directory: Path,
    name: str,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    log: Callable[[str], None] = print,
) -> ServerCert:
    """A certificate for `hosts` named `name` (``<name>.pem``, ``<name>.key``), signed by the CA
    of `directory` (made first when missing)."""
    ensure_ca(directory, log)
    out = ServerCert(directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}-chain.pem")
    if out.cert.exists() and out.key.exists() and out.chain.exists():
        return out
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    sans = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _new_key(out.key, log)
    _openssl(["req", "-new", "-key", str(out.key), "-subj", f"/CN={hosts[0]}", "-out", str(csr)], log)
    _openssl(
        ["x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"),
         "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-sha256", "-days", DAYS,
         "-extfile", str(ext), "-out", str(out.cert)],
        log,
    )  # fmt: skip
    out.chain.write_text(out.key.read_text() + out.cert.read_text())
    _private(out.chain)
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
