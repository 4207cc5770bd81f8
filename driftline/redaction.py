"""Secrets never printed: passwords cut out of URLs, configured secrets scrubbed from log records.

`redact_url` is for addresses a process prints on purpose (banners, errors). `SecretScrubber`
is the net under everything else: installed once per process (`install_scrubber`), it replaces
every configured secret in every log record (message, arguments, traceback) by ``***``, whatever
library wrote the line.

>>> redact_url("redis://worker:s3cret@127.0.0.1:6379/0")
'redis://worker:***@127.0.0.1:6379/0'
>>> redact_url("rediss://:s3cret@redis:6380")
'rediss://:***@redis:6380'
>>> redact_url("redis://127.0.0.1:6379/0")
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo (``user:password@``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # unparseable: it might be anything, print none of it
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by ``***`` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class SecretScrubber:
    """A log-record factory wrapper: a record that contains a secret is rewritten without it.

    A record factory, not a handler filter, so it holds for every handler (Faust installs its
    own) and every logger, propagated or not."""

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self.base = base
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        # Very short "secrets" would mangle every line; they are no secrets worth the name.
        with self._lock:
            self.secrets |= {s for s in secrets if len(s) >= 4}

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        secrets = self.secrets
        if not secrets:
            return record
        message = record.getMessage()
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = scrub(text, secrets)
            if cleaned != text:
                record.exc_info, record.exc_text = None, cleaned
        return record


_install_lock = threading.Lock()


def install_scrubber(secrets: Iterable[str]) -> SecretScrubber:
    """Scrub `secrets` from every log record of this process from now on (idempotent)."""
    with _install_lock:
        factory = logging.getLogRecordFactory()
        if not isinstance(factory, SecretScrubber):
            factory = SecretScrubber(factory)
            logging.setLogRecordFactory(factory)
        factory.add(secrets)
        return factory


def scrub_known(text: str) -> str:
    """`text` without the secrets installed so far (`install_scrubber`): for lines printed
    outside logging, such as the CLI's one-line errors."""
    factory = logging.getLogRecordFactory()
    return scrub(text, factory.secrets) if isinstance(factory, SecretScrubber) else text
