"""Shared fixtures. Integration tests run against the real local stack (`driftline stack up`);
every test session gets its own topic prefix, so runs never read each other's data.

Every name a test creates on the shared stack starts with the session's prefix (per-test ones
come from `new_prefix`), and is deleted: a test's own prefix after the test, the session's at its
end. The terminal summary says how much the run created and how much it left (0 expected).
Under pytest-xdist each worker is a session of its own; the controller adds up their counts."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import AdminClient

from driftline.settings import Settings
from driftline.stack import LocalStack
from stream.topics import Topics, create_topics
from tests.stack_cleanup import BackgroundPurge, Footprint, StackSweeper

REPO = Path(__file__).resolve().parents[1]

RUN_PREFIX = pytest.StashKey[str]()
LEDGER = pytest.StashKey[dict[str, Footprint]]()  # "created", "left"
USED = pytest.StashKey[bool]()  # the session touched the shared stack
FAUST_DATADIR = pytest.StashKey[tuple[Path, str | None]]()  # this process's, and APP_DATADIR before
# A worker SIGKILLed by a test stays a member of its group for its session timeout (10 s).
GROUP_WAIT_AT_END = 20.0


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RUN_PREFIX] = f"test-{uuid.uuid4().hex[:10]}"
    config.stash[LEDGER] = {"created": Footprint(), "left": Footprint()}
    config.stash[USED] = False
    # Faust writes a `<app id>-data` directory into the working directory (the repository):
    # every retrainer the tests start, in process or as a CLI subprocess, writes it here instead.
    datadir = Path(tempfile.mkdtemp(prefix="driftline-faust-"))
    config.stash[FAUST_DATADIR] = (datadir, os.environ.get("APP_DATADIR"))
    os.environ["APP_DATADIR"] = str(datadir / "{conf.name}-data")


def pytest_unconfigure(config: pytest.Config) -> None:
    if FAUST_DATADIR not in config.stash:
        return
    datadir, before = config.stash[FAUST_DATADIR]
    shutil.rmtree(datadir, ignore_errors=True)
    if before is None:
        os.environ.pop("APP_DATADIR", None)
    else:
        os.environ["APP_DATADIR"] = before


STACK_AT_START = pytest.StashKey[str]()


def _stack_size() -> str:
    try:
        size = StackSweeper(Settings()).size(timeout=3)
    except Exception as exc:
        return f"not answering ({type(exc).__name__})"
    return f"{size.keys} Redis keys, {size.topics} topics, {size.groups} consumer groups"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The shared stack's size at the start (other sessions' data included), said at once."""
    if os.environ.get("PYTEST_XDIST_WORKER") or session.config.getoption("collectonly"):
        return
    session.config.stash[STACK_AT_START] = _stack_size()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"shared stack at start: {session.config.stash[STACK_AT_START]}")


def _stack_up(s: Settings) -> bool:
    stack = LocalStack(s, log=lambda _m: None)
    return stack.kafka_answering() and stack.redis_answering()


def _record(config: pytest.Config, created: Footprint) -> None:
    config.stash[LEDGER]["created"] = config.stash[LEDGER]["created"] + created


@pytest.fixture(scope="session")
def run_prefix(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[RUN_PREFIX]


@pytest.fixture(scope="session")
def sweeper(run_prefix: str, pytestconfig: pytest.Config) -> Iterator[StackSweeper]:
    s = Settings(topic_prefix=run_prefix)
    pytestconfig.stash[USED] = True
    if not _stack_up(s):
        pytest.fail(
            f"integration tests need the local stack at {s.kafka_bootstrap} and {s.redis_url}: "
            "run `make test` (it starts it) or `driftline stack up`"
        )
    sweeper = StackSweeper(s)
    yield sweeper
    sweeper.close()


@pytest.fixture(scope="session")
def purger(sweeper: StackSweeper, run_prefix: str, pytestconfig: pytest.Config) -> Iterator[BackgroundPurge]:
    """Deletes each test's prefixes after it, in the background (see `BackgroundPurge`)."""
    purge = BackgroundPurge(sweeper, run_prefix, lambda created: _record(pytestconfig, created))
    yield purge
    purge.close()
    if purge.failures:
        warnings.warn(f"{purge.failures} background purges failed; the final sweep did them", stacklevel=1)


@pytest.fixture(scope="session")
def stack_settings(run_prefix: str, sweeper: StackSweeper) -> Settings:
    """Settings for the running local stack, with this run's own topic prefix and topics
    (deleted, with every key and group of the prefix, at the end of the session)."""
    s = Settings(topic_prefix=run_prefix)
    create_topics(AdminClient(s.kafka_client_config()), Topics(run_prefix), partitions=6)
    return s


@pytest.fixture
def new_prefix(stack_settings: Settings, purger: BackgroundPurge) -> Iterator[Callable[[str], str]]:
    """Makes prefixes (namespaces) of this test's own, under the session's; after the test,
    their keys, topics and consumer groups are deleted (in the background: a purge scans the
    whole Redis keyspace, seconds per test when it holds a million keys)."""
    made: list[str] = []

    def make(label: str = "") -> str:
        prefix = f"{stack_settings.topic_prefix}-{label}{uuid.uuid4().hex[:6]}"
        made.append(prefix)
        return prefix

    yield make
    purger.submit(made)


@pytest.fixture
def redis_ns(stack_settings: Settings, new_prefix: Callable[[str], str]) -> Iterator[tuple[redis.Redis, str]]:
    """The shared stack's Redis and a namespace of this test's own (its keys deleted after)."""
    r = redis.Redis.from_url(stack_settings.redis_url)
    yield r, new_prefix("ns")
    r.close()


@pytest.fixture
def cli_env(stack_settings: Settings) -> dict[str, str]:
    """Environment for running the `driftline` CLI as a subprocess against this run's topics."""
    return {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "DRIFTLINE_REDIS_URL": stack_settings.redis_url,
        "DRIFTLINE_TOPIC_PREFIX": stack_settings.topic_prefix,
        "COLUMNS": "200",
    }


@pytest.fixture
def own_settings(stack_settings: Settings, new_prefix: Callable[[str], str]) -> Settings:
    """Like `stack_settings`, with topics of this test's own (for exact counts)."""
    s = stack_settings.model_copy(update={"topic_prefix": new_prefix("")})
    create_topics(AdminClient(s.kafka_client_config()), Topics(s.topic_prefix), partitions=6)
    return s


# ---- the run's footprint on the shared stack ------------------------------------------------
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Sweep the session's prefix (what session-wide tests wrote, and anything a test missed),
    then count what is still there."""
    config = session.config
    prefix = config.stash[RUN_PREFIX]
    s = Settings(topic_prefix=prefix)
    if not config.stash[USED] or not _stack_up(s):
        return
    sweeper = StackSweeper(s)
    try:
        _record(config, sweeper.purge(prefix, group_wait=GROUP_WAIT_AT_END))
        config.stash[LEDGER]["left"] = sweeper.count(prefix, settle=10.0)
    finally:
        sweeper.close()
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller reports
        config.workeroutput["footprint"] = {k: asdict(v) for k, v in config.stash[LEDGER].items()}


def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: add up a worker's footprint."""
    got = getattr(node, "workeroutput", {}).get("footprint")
    if got:
        ledger = node.config.stash[LEDGER]
        for kind, counts in got.items():
            ledger[kind] = ledger[kind] + Footprint(**counts)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    ledger = config.stash.get(LEDGER, None)
    if ledger is None or not (ledger["created"] or ledger["left"]):
        return
    terminalreporter.write_sep("-", "shared stack footprint of this run")
    terminalreporter.write_line(f"created and deleted: {ledger['created'].describe()}")
    terminalreporter.write_line(f"left behind: {ledger['left'].describe()}")
    if STACK_AT_START in config.stash:
        terminalreporter.write_line(f"shared stack at start: {config.stash[STACK_AT_START]}")
        terminalreporter.write_line(f"shared stack at end:   {_stack_size()} (other sessions included)")
