"""The Docker deployment (docker-compose.yml, deploy/) is wired consistently with the settings.

Nothing here runs Docker: the files are parsed and cross-checked, so a renamed service, a moved
port or a misspelt setting fails here instead of in a user's `docker compose up`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from driftline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

REQUIRED_SERVICES = {
    "kafka",
    "redis",
    "topics",
    "worker",
    "outcomes",
    "retrainer",
    "api",
    "prometheus",
    "grafana",
}
DRIFTLINE_SERVICES = {"topics", "worker", "outcomes", "retrainer", "api"}
ONE_SHOT_SERVICES = {"topics"}
# Services that need Kafka and Redis up (and the topics created) before they start.
STREAMING_SERVICES = {"worker", "outcomes", "retrainer", "api"}
EXPECTED_COMMANDS = {
    "topics": ["topics", "create"],
    "worker": ["worker"],
    "outcomes": ["outcomes"],
    "retrainer": ["retrainer"],
    "api": ["api"],
}
# Prometheus job -> compose service it scrapes.
SCRAPE_JOBS = {
    "driftline-worker": "worker",
    "driftline-outcomes": "outcomes",
    "driftline-retrainer": "retrainer",
    "driftline-api": "api",
}
NAMED_VOLUME_SERVICES = {"kafka", "redis", "prometheus", "grafana"}

# Every metric the Grafana dashboard may query (histograms by base name, without _bucket etc.).
DASHBOARD_METRICS = {
    "driftline_events_consumed_total",
    "driftline_predictions_total",
    "driftline_dlq_total",
    "driftline_batch_latency_seconds",
    "driftline_drift_alerts_total",
    "driftline_incidents_open",
    "driftline_incident_events_total",
    "driftline_event_lag_seconds",
    "driftline_consumer_lag",
    "driftline_psi",
    "driftline_live_accuracy",
    "driftline_estimated_accuracy",
    "driftline_model_info",
    "driftline_retrain_steps_total",
    "driftline_rollout_decisions_total",
}
HISTOGRAM_METRICS = {"driftline_batch_latency_seconds", "driftline_event_lag_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

REDIS_DEFAULT_PORT = 6379
PROMETHEUS_PORT = 9090
LOCAL_HOSTS = {"localhost", "127.0.0.1"}


# ---- helpers -----------------------------------------------------------------------------------
def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return _load_yaml(PROMETHEUS_CONFIG)


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings built here see only what the test passes: no DRIFTLINE_* env, no YAML file."""
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(tmp_path / "absent.yaml"))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment` as a dict (compose allows a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {kv[0]: kv[1] if len(kv) > 1 else "" for kv in pairs}
    assert isinstance(env, dict)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings from a service's DRIFTLINE_* variables, each of which must be a real field."""
    kwargs: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith("DRIFTLINE_"):
            continue
        field = key.removeprefix("DRIFTLINE_").lower()
        assert field in Settings.model_fields, f"{key} is not a Settings field"
        kwargs[field] = value
    return Settings(**kwargs)


def host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    assert sep and port.isdigit(), f"not host:port: {address!r}"
    return host, int(port)


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)} (an empty host means all interfaces)."""
    result = {}
    for item in value.split(","):
        name, sep, address = item.strip().partition("://")
        assert sep, f"bad listener {item!r}"
        result[name] = host_port(address)
    return result


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return test
    assert isinstance(test, list)
    assert test, "empty healthcheck test"
    assert test[0] in {"CMD", "CMD-SHELL"}, f"healthcheck test starts with {test[0]!r}"
    assert len(test) > 1, "healthcheck test has no command"
    return " ".join(str(part) for part in test[1:])


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """(host path, container path) of each bind mount given as a relative path."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
        if source.startswith(("./", "../")):
            yield ROOT / source, target


def named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        source = str(volume.get("source", "")) if isinstance(volume, dict) else str(volume)
        source = source.split(":")[0]
        if source and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def kafka_advertised_plaintext(services: dict[str, dict[str, Any]]) -> tuple[str, int]:
    advertised = listeners(env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    assert "PLAINTEXT" in advertised
    return advertised["PLAINTEXT"]


def redis_port(service: dict[str, Any]) -> int:
    command = service.get("command") or []
    parts = command.split() if isinstance(command, str) else [str(p) for p in command]
    if "--port" in parts:
        return int(parts[parts.index("--port") + 1])
    return REDIS_DEFAULT_PORT


def published_container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile line, with continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "driftline.json").read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))  # rows may nest panels

    walk(dashboard["panels"])
    exprs.extend(a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if "expr" in a)
    return exprs


def queried_metrics(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bdriftline_[A-Za-z0-9_]+", expr):
        if name.endswith(HISTOGRAM_SUFFIXES):
            base = name.rsplit("_", 1)[0]
            if base in HISTOGRAM_METRICS:
                name = base
        names.add(name)
    return names


# ---- services ----------------------------------------------------------------------------------
def test_services_are_the_expected_ones(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= REQUIRED_SERVICES


def test_driftline_services_build_the_same_image_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    built = {name for name, svc in services.items() if "build" in svc}
    assert built == DRIFTLINE_SERVICES
    images = set()
    for name in DRIFTLINE_SERVICES:
        build = services[name]["build"]
        assert build["context"] == "."
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(services[name].get("image"))
    assert len(images) == 1, f"driftline services tag different images: {images}"


@pytest.mark.parametrize("name", sorted(EXPECTED_COMMANDS))
def test_driftline_service_commands(services: dict[str, dict[str, Any]], name: str) -> None:
    assert services[name]["command"] == EXPECTED_COMMANDS[name]


@pytest.mark.parametrize("name", sorted(DRIFTLINE_SERVICES))
def test_driftline_env_parses_as_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    env = env_of(services[name])
    for key in (
        "DRIFTLINE_KAFKA_BOOTSTRAP",
        "DRIFTLINE_REDIS_URL",
        "DRIFTLINE_TOPIC_PREFIX",
        "DRIFTLINE_METRICS_PORT",
    ):
        assert key in env, f"{name} lacks {key}"
    s = settings_from_env(env)
    assert s.kafka_bootstrap == env["DRIFTLINE_KAFKA_BOOTSTRAP"]
    assert s.redis_url == env["DRIFTLINE_REDIS_URL"]
    assert s.topic_prefix == env["DRIFTLINE_TOPIC_PREFIX"]
    assert s.metrics_port == int(env["DRIFTLINE_METRICS_PORT"])


def test_driftline_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    shared = {key: value for key, value in env_of(services["worker"]).items() if key.startswith("DRIFTLINE_")}
    for name in DRIFTLINE_SERVICES:
        env = env_of(services[name])
        assert {key: env.get(key) for key in shared} == shared, name


def test_settings_rejects_unknown_keys_in_this_check() -> None:
    """The field check in settings_from_env is what catches a misspelt variable."""
    with pytest.raises(AssertionError, match="not a Settings field"):
        settings_from_env({"DRIFTLINE_KAFKA_BOOTSTRAPS": "kafka:9092"})


# ---- kafka and redis ---------------------------------------------------------------------------
def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(env["KAFKA_LISTENERS"])
    assert bound["PLAINTEXT"][1] == 9092
    assert bound["CONTROLLER"][1] == 9093
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    assert host_port(voter) == ("kafka", bound["CONTROLLER"][1])
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_kafka_advertises_what_it_listens_on(services: dict[str, dict[str, Any]]) -> None:
    host, port = kafka_advertised_plaintext(services)
    assert host == "kafka"
    assert listeners(env_of(services["kafka"])["KAFKA_LISTENERS"])["PLAINTEXT"][1] == port


@pytest.mark.parametrize("name", sorted(DRIFTLINE_SERVICES))
def test_bootstrap_is_kafkas_advertised_listener(services: dict[str, dict[str, Any]], name: str) -> None:
    s = settings_from_env(env_of(services[name]))
    assert s.kafka_host_port == kafka_advertised_plaintext(services)


@pytest.mark.parametrize("name", sorted(DRIFTLINE_SERVICES))
def test_redis_url_points_at_the_redis_service(services: dict[str, dict[str, Any]], name: str) -> None:
    s = settings_from_env(env_of(services[name]))
    assert urlparse(s.redis_url).scheme == "redis"
    assert s.redis_host_port == ("redis", redis_port(services["redis"]))


# ---- startup order and health ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STREAMING_SERVICES))
def test_streaming_services_wait_for_healthy_backends(services: dict[str, dict[str, Any]], name: str) -> None:
    depends = services[name]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form to carry conditions"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["topics"]["condition"] == "service_completed_successfully"


def test_topics_waits_for_kafka_and_runs_once(services: dict[str, dict[str, Any]]) -> None:
    topics = services["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert str(topics.get("restart", "no")) == "no"


def test_dependencies_exist_and_are_acyclic(services: dict[str, dict[str, Any]]) -> None:
    def deps(name: str) -> list[str]:
        raw = services[name].get("depends_on") or []
        return list(raw)

    for name in services:
        for dep in deps(name):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if services[name]["depends_on"][dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"

    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, f"dependency cycle through {name}"
        if name in done:
            return
        visiting.add(name)
        for dep in deps(name):
            visit(dep)
        visiting.discard(name)
        done.add(name)

    for name in services:
        visit(name)


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    long_running = set(services) - ONE_SHOT_SERVICES
    assert long_running >= REQUIRED_SERVICES - ONE_SHOT_SERVICES
    for name in long_running:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert healthcheck_command(services[name]).strip(), name


def test_kafka_and_redis_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    kafka_check = healthcheck_command(services["kafka"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka_check
    assert "--bootstrap-server localhost:9092" in kafka_check
    assert healthcheck_command(services["redis"]) == "redis-cli ping"


def _fetched_urls(command: str) -> list[tuple[str, int, str]]:
    found = re.findall(r"http://([^/'\"\s:]+):(\d+)(/[^'\"\s]*)", command)
    return [(host, int(port), path) for host, port, path in found]


@pytest.mark.parametrize("name", ["worker", "outcomes", "retrainer"])
def test_worker_healthchecks_fetch_the_metrics_port(services: dict[str, dict[str, Any]], name: str) -> None:
    command = healthcheck_command(services[name])
    assert "urllib" in command
    s = settings_from_env(env_of(services[name]))
    urls = _fetched_urls(command)
    assert len(urls) == 1
    host, port, path = urls[0]
    assert host in LOCAL_HOSTS
    assert (port, path) == (s.metrics_port, "/metrics")


def test_api_listens_publicly_and_its_healthcheck_fetches_healthz(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    s = settings_from_env(env_of(api))
    assert s.api_host == "0.0.0.0"
    assert s.api_port in published_container_ports(api)
    urls = _fetched_urls(healthcheck_command(api))
    assert len(urls) == 1
    host, port, path = urls[0]
    assert host in LOCAL_HOSTS
    assert (port, path) == (s.api_port, "/healthz")


def test_stateful_services_use_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name in NAMED_VOLUME_SERVICES:
        volumes = named_volumes(compose["services"][name])
        assert volumes, f"{name} has no named volume"
        assert set(volumes) <= declared, f"{name} uses undeclared volumes"


# ---- prometheus --------------------------------------------------------------------------------
def test_prometheus_scrapes_every_driftline_process(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    assert prometheus_config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    assert set(jobs) >= set(SCRAPE_JOBS)
    for job_name, service_name in SCRAPE_JOBS.items():
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert len(targets) == 1, job_name
        host, port = host_port(targets[0])
        assert host == service_name
        assert host in services
        s = settings_from_env(env_of(services[service_name]))
        expected_port = s.api_port if service_name == "api" else s.metrics_port
        assert port == expected_port, job_name


def test_prometheus_mounts_its_config(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = dict(bind_mounts(prometheus))
    assert mounts, "prometheus mounts no config"
    for source in mounts:
        assert source.exists(), f"{source} is mounted but missing"
    assert mounts[PROMETHEUS_CONFIG] == "/etc/prometheus/prometheus.yml"
    assert PROMETHEUS_PORT in published_container_ports(prometheus)


# ---- grafana -----------------------------------------------------------------------------------
def test_grafana_mounts_exist_and_anonymous_viewer(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = dict(bind_mounts(grafana))
    assert mounts
    for source in mounts:
        assert source.exists(), f"{source} is mounted but missing"
    env = env_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert 3000 in published_container_ports(grafana)


def _container_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    """The host path that a container path of the service resolves to through its bind mounts."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for source, target in bind_mounts(service):
        mount = PurePosixPath(target)
        if wanted == mount or mount in wanted.parents:
            depth = len(mount.parts)
            if best is None or depth > best[0]:
                best = (depth, source / wanted.relative_to(mount))
    return best[1] if best else None


def test_grafana_provisioning_is_mounted_where_grafana_reads_it(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    for kind in ("datasources", "dashboards"):
        host = _container_to_host(grafana, f"/etc/grafana/provisioning/{kind}")
        assert host == GRAFANA_DIR / "provisioning" / kind, kind
        assert list(host.glob("*.yml")), f"no provisioning files in {host}"


def test_grafana_datasource_is_the_prometheus_service(services: dict[str, dict[str, Any]]) -> None:
    config = _load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = [d for d in config["datasources"] if d["type"] == "prometheus"]
    assert datasource["uid"] == "prometheus"
    url = urlparse(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.hostname in services
    assert url.port == PROMETHEUS_PORT


def test_grafana_dashboard_provider_points_at_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "driftline.yml")
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    host = _container_to_host(services["grafana"], provider["options"]["path"])
    assert host is not None, "the dashboard provider's path is not mounted"
    assert (host / "driftline.json").is_file()


def test_dashboard_queries_only_known_metrics() -> None:
    exprs = dashboard_exprs()
    assert exprs, "the dashboard has no queries"
    queried = set().union(*(queried_metrics(expr) for expr in exprs))
    assert queried <= DASHBOARD_METRICS, f"unknown metrics: {queried - DASHBOARD_METRICS}"
    assert queried == DASHBOARD_METRICS, f"metrics without a panel: {DASHBOARD_METRICS - queried}"


def test_dashboard_shows_batch_latency_quantiles() -> None:
    quantiles = set()
    for expr in dashboard_exprs():
        match = re.search(
            r"histogram_quantile\(\s*([0-9.]+)\s*,.*driftline_batch_latency_seconds_bucket", expr
        )
        if match:
            quantiles.add(float(match.group(1)))
    assert {0.5, 0.99} <= quantiles


def test_dashboard_marks_incidents_as_annotations() -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "driftline.json").read_text())
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
    assert {"Incident opened", "Incident resolved"} <= set(annotations)
    for a in annotations.values():
        assert a["datasource"] == {"type": "prometheus", "uid": "prometheus"} and a["enable"]
        assert "driftline_incident_events_total" in a["expr"]


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "driftline.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource")
            assert datasource == {"type": "prometheus", "uid": "prometheus"}, panel["title"]


def test_queried_metrics_parser() -> None:
    assert queried_metrics(
        "histogram_quantile(0.5, sum by (le) (rate(driftline_batch_latency_seconds_bucket[1m])))"
    ) == {"driftline_batch_latency_seconds"}
    assert queried_metrics("sum(rate(driftline_other_total[1m]))") == {"driftline_other_total"}


# ---- dockerfile --------------------------------------------------------------------------------
def test_dockerfile_base_image_is_slim_python_311() -> None:
    bases = [args.split()[0] for instr, args in dockerfile_instructions() if instr == "FROM"]
    assert bases
    for base in bases:
        name, _, tag = base.partition("@")[0].partition(":")
        assert name in {"python", "docker.io/library/python"}, base
        assert tag.startswith("3.11-slim") or (tag.startswith("3.11.") and "-slim" in tag), base


def test_dockerfile_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    users = [args for instr, args in instructions[last_from:] if instr == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0", ""}


def test_dockerfile_entrypoint_is_the_cli() -> None:
    instructions = dict(dockerfile_instructions())
    assert json.loads(instructions["ENTRYPOINT"]) == ["driftline"]
    assert json.loads(instructions["CMD"]) == ["--help"]


def test_dockerfile_copies_every_package_and_project_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied: set[str] = set()
    for instr, args in dockerfile_instructions():
        if instr == "COPY" and not args.startswith("--from"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in sources)
    assert set(packages) <= copied, f"not copied: {set(packages) - copied}"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    run_lines = [args for instr, args in dockerfile_instructions() if instr == "RUN"]
    assert any(re.search(r"pip install .*--no-cache-dir .*\.$", line) for line in run_lines)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests"} <= ignored
    for package in ("driftline", "stream", "pyproject.toml", "README.md", "deploy/Dockerfile"):
        assert package not in ignored


def test_dashboard_metrics_are_exported_by_driftline() -> None:
    """Every metric the dashboard plots is registered by a Driftline process (no typo'd panel)."""
    from prometheus_client import CollectorRegistry

    from stream.drift import DriftMetrics
    from stream.metrics import WorkerMetrics
    from stream.outcomes import OutcomeMetrics
    from stream.retrainer import retrainer_metrics

    registry = CollectorRegistry()
    DriftMetrics(registry)
    retrainer_metrics(registry)
    registries = [registry, WorkerMetrics().registry, OutcomeMetrics().registry]
    exported = set()
    for r in registries:
        for family in r.collect():
            exported.add(family.name)
            if family.type == "counter":
                exported.add(family.name + "_total")
    assert exported >= DASHBOARD_METRICS, DASHBOARD_METRICS - exported


def test_published_api_requires_a_token(services: dict[str, dict[str, Any]]) -> None:
    """The API binds 0.0.0.0 in its container, so compose refuses to start it without a token."""
    env = env_of(services["api"])
    assert env["DRIFTLINE_API_HOST"] == "0.0.0.0"
    assert env["DRIFTLINE_API_TOKEN"].startswith("${DRIFTLINE_API_TOKEN:?")
