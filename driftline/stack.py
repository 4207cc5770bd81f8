"""The local stack: a real single-node Kafka broker (KRaft) and a real redis-server.

Kafka's jars come from Maven Central through Maven (``deploy/local/pom.xml``) into
``<cache_dir>/kafka-<version>/libs``; the broker runs with ``java``. Redis is Debian's
``redis-server``, installed with apt-get when missing (as root). Data, logs and pid files live
in ``<stack_dir>``; ``down`` stops only processes whose pid files it wrote and whose command
line still matches, so it never kills an unrelated process that reused a pid.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from driftline.errors import DriftlineError
from driftline.redaction import scrub
from driftline.settings import Settings
from driftline.stack_security import StackSecurity

KAFKA_VERSION = "3.9.1"
DEPLOY_LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"


class StackError(DriftlineError):
    """A stack operation failed; the message says what to do about it."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None  # pid of the process the stack started, if it is alive
    answering: bool

    @property
    def state(self) -> str:
        if self.answering:
            return "running" if self.pid else "running (not started by driftline)"
        return "starting or unhealthy" if self.pid else "stopped"


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


class LocalStack:
    """The local broker and Redis: plain (the default), or `secure` (SASL_SSL Kafka, TLS-only
    Redis with ACL users; its files under ``<stack_dir>/secure``). One start-up code for both:
    the secured stack only adds its properties and arguments (`StackSecurity`)."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = print, secure: bool = False) -> None:
        self.s = settings
        self.log = log
        self.kafka_host, self.kafka_port = settings.kafka_host_port
        self.controller_port = settings.kafka_controller_port or self.kafka_port + 1
        self.redis_host, self.redis_port = settings.redis_host_port
        self.root = settings.stack_dir / "secure" if secure else settings.stack_dir
        self.kafka_dir = self.root / "kafka"
        self.redis_dir = self.root / "redis"
        self.libs = settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
        hosts = tuple(dict.fromkeys((self.kafka_host, self.redis_host, "127.0.0.1")))
        self.security = StackSecurity(self.root, hosts) if secure else None

    @property
    def probe(self) -> Settings:
        """The settings the stack's own health probes connect with (the admin user if secured)."""
        return self.security.client_settings(self.s) if self.security else self.s

    @property
    def redis_display(self) -> str:
        return self.probe.redis_display

    # ---- status ---------------------------------------------------------------------------
    def _pid(self, name: str, marker: str) -> int | None:
        pid_file = self.root / f"{name}.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().strip() or 0)
        if pid and _alive(pid) and marker in _cmdline(pid):
            return pid
        pid_file.unlink(missing_ok=True)  # stale: the process is gone or the pid was reused
        return None

    def kafka_pid(self) -> int | None:
        return self._pid("kafka", str(self.kafka_dir))

    def redis_pid(self) -> int | None:
        return self._pid("redis", f":{self.redis_port}")

    def kafka_answering(self, timeout: float = 3.0) -> bool:
        if not _port_open(self.kafka_host, self.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.probe.kafka_client_config(**{"socket.timeout.ms": 2000}))
        try:
            admin.list_topics(timeout=timeout)
            return True
        except Exception:
            return False

    def redis_answering(self) -> bool:
        try:
            return bool(self.probe.redis_client(socket_timeout=1, connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus("kafka", self.s.kafka_bootstrap, self.kafka_pid(), self.kafka_answering()),
            ServiceStatus(
                "redis",
                f"{self.redis_host}:{self.redis_port}",
                self.redis_pid(),
                self.redis_answering(),
            ),
        ]

    # ---- up -------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> list[ServiceStatus]:
        self.root.mkdir(parents=True, exist_ok=True)
        self._up_redis(timeout)
        self._up_kafka(timeout)
        return self.status()

    def ensure_kafka_jars(self) -> Path:
        marker = self.libs / ".complete"
        if marker.exists():
            return self.libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven")
        self.log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once) ...")
        staging = self.libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(DEPLOY_LOCAL / "pom.xml"),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise StackError("Maven could not fetch Kafka's jars:\n" + "\n".join(tail))
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        marker.touch()
        return self.libs

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise StackError(
                "Java 17+ is needed for the local Kafka broker: apt-get install openjdk-17-jre-headless"
            )
        return java

    def _write_kafka_config(self) -> Path:
        data = self.kafka_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        host, port, ctrl = self.kafka_host, self.kafka_port, self.controller_port
        listener = "SASL_SSL" if self.security else "PLAINTEXT"  # the clients' (and brokers') listener
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{ctrl}",
            "listeners": f"{listener}://{host}:{port},CONTROLLER://{host}:{ctrl}",
            "advertised.listeners": f"{listener}://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.s.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            **(self.security.kafka_properties() if self.security else {}),
        }
        path = self.kafka_dir / "server.properties"
        path.touch(mode=0o600)  # a secured broker's holds its own password
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _up_kafka(self, timeout: float) -> None:
        if self.kafka_pid() is not None and self.kafka_answering():
            self.log(f"kafka: already running at {self.s.kafka_bootstrap} (reused)")
            return
        if self.kafka_pid() is None and self.kafka_answering():
            self.log(f"kafka: a broker already answers at {self.s.kafka_bootstrap}; using it")
            return
        if self.kafka_pid() is None:
            for port in (self.kafka_port, self.controller_port):
                if _port_open(self.kafka_host, port):
                    raise StackError(f"port {port} is taken by another process; choose other ports")
            libs = self.ensure_kafka_jars()
            java = self._java()
            config = self._write_kafka_config()
            classpath = f"{libs}/*"
            log4j = f"-Dlog4j.configuration=file:{DEPLOY_LOCAL / 'log4j.properties'}"
            if not (self.kafka_dir / "data" / "meta.properties").exists():
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
                fmt = [
                    java,
                    "-cp",
                    classpath,
                    log4j,
                    "kafka.tools.StorageTool",
                    "format",
                    # `--cluster-id=` form: a random id may start with "-", which argparse4j
                    # would otherwise read as a flag (1 in 64 fresh machines failed to format).
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(config),
                    # A secured broker's SCRAM users exist from the start (KRaft: at format time).
                    *(self.security.kafka_format_args() if self.security else []),
                ]
                result = subprocess.run(fmt, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    output = result.stdout + result.stderr
                    if self.security:  # the command line carried the SCRAM passwords
                        output = scrub(output, self.security.secrets().values())
                    raise StackError(f"formatting Kafka storage failed:\n{output}")
            log_file = (self.kafka_dir / "kafka.log").open("ab")
            heap = self.s.kafka_heap
            proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{heap}",
                    f"-Xms{heap}",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    log4j,
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command
            )
            (self.root / "kafka.pid").write_text(str(proc.pid))
            self.log(f"kafka: started Apache Kafka {KAFKA_VERSION} (pid {proc.pid}), waiting ...")
        self._wait("kafka", self.kafka_answering, timeout, self.kafka_dir / "kafka.log")
        self.log(f"kafka: ready at {self.s.kafka_bootstrap}")

    def ensure_redis_binary(self) -> str:
        return debian_binary("redis-server", "redis-server", self.log)

    def _up_redis(self, timeout: float) -> None:
        if self.redis_answering():
            owner = "reused" if self.redis_pid() else "not started by driftline; using it"
            self.log(f"redis: already running at {self.redis_host}:{self.redis_port} ({owner})")
            return
        if self.redis_pid() is None:
            binary = self.ensure_redis_binary()
            self.redis_dir.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(
                [
                    binary,
                    *(
                        self.security.redis_args(self.redis_port, self.redis_dir)
                        if self.security
                        else ["--port", str(self.redis_port)]
                    ),
                    "--bind",
                    self.redis_host,
                    "--dir",
                    str(self.redis_dir),
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--logfile",
                    str(self.redis_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            (self.root / "redis.pid").write_text(str(proc.pid))
            self.log(f"redis: started redis-server (pid {proc.pid})")
        self._wait("redis", self.redis_answering, timeout, self.redis_dir / "redis.log")
        self.log(f"redis: ready at {self.redis_display}")

    def _wait(self, name: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        raise StackError(f"{name} did not answer within {timeout:.0f}s; last log lines:\n" + "\n".join(tail))

    # ---- down -----------------------------------------------------------------------------
    def down(self, timeout: float = 60.0) -> list[str]:
        stopped = []
        for name, pid in (("kafka", self.kafka_pid()), ("redis", self.redis_pid())):
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            (self.root / f"{name}.pid").unlink(missing_ok=True)
            stopped.append(f"{name} (pid {pid})")
        return stopped


def debian_binary(binary: str, package: str, log: Callable[[str], None]) -> str:
    """The path of ``binary``, installing Debian's ``package`` with apt-get first if it is missing
    (as root; otherwise a one-line StackError saying what to install)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{binary} is missing: install it with `sudo apt-get install {package}`")
    log(f"{package}: installing Debian's {package} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
    found = shutil.which(binary) or f"/usr/bin/{binary}"
    if not Path(found).exists():
        raise StackError(f"apt-get installed {package} but {binary} was not found")
    return found
