"""The deployment files agree with the code: Dockerfile, compose, Kubernetes and the Grafana dashboard.

Nothing here needs Docker, a cluster or the network: the files are parsed and checked
against the real CLI parser, the real settings and the routes the real apps register.
Only `docker compose config` needs a Docker engine; that test is skipped without one.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from gateway.app import create_app
from millrace.config import Settings, describe
from ops.cli import parser
from tests.conftest import shipped_packages
from workers.server import read_app

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
HAPROXY = ROOT / "deploy" / "compose" / "haproxy.cfg"
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "millrace.json"

SETTINGS = frozenset(env for env, _, _ in describe())
DEFAULTS = {env: default for env, default, _ in describe()}
SETTING_LIKE = re.compile(r"^(MILLRACE|KAFKA)_")
URL_PATH = re.compile(r"https?://(?:127\.0\.0\.1|localhost):[^/'\"\s]+(/[\w./-]*)")

# The Prometheus metrics the dashboard may use (name -> labels), as the metrics code exports them.
COUNTERS_AND_GAUGES: dict[str, frozenset[str]] = {
    "millrace_requests_total": frozenset({"dialect", "status"}),
    "millrace_logs_accepted_total": frozenset({"dialect"}),
    "millrace_logs_rejected_total": frozenset({"dialect", "reason"}),
    "millrace_request_bytes_total": frozenset({"dialect"}),
    "millrace_kafka_errors_total": frozenset({"kind"}),
    "millrace_consumer_lag": frozenset({"partition"}),
    "millrace_insert_failures_total": frozenset(),
    "millrace_dead_letters_total": frozenset({"code"}),
    "millrace_rows_inserted_total": frozenset({"table"}),
    "millrace_alert_evaluations_total": frozenset({"outcome"}),
    "millrace_alert_transitions_total": frozenset({"state"}),
    "millrace_alert_webhooks_total": frozenset({"outcome"}),
}
HISTOGRAMS: dict[str, frozenset[str]] = {
    "millrace_produce_seconds": frozenset(),
    "millrace_batch_rows": frozenset(),
    "millrace_insert_seconds": frozenset(),
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


# --- the code the files must agree with --------------------------------------------------


def cli_accepts(argv: list[str]) -> bool:
    """True when `millrace <argv>` parses with the real CLI parser."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(argv)
        except SystemExit:
            return False
    return True


@cache
def gateway_paths() -> frozenset[str]:
    """GET paths the gateway app registers (creating the app connects to nothing)."""
    app = create_app(Settings.from_env({}))
    return frozenset(r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource)


@cache
def worker_paths() -> frozenset[str]:
    """GET paths of the worker's internal port (with a server DSN it opens no store)."""
    app = read_app(Settings.from_env({"MILLRACE_CLICKHOUSE_DSN": "http://localhost:8123"}))
    return frozenset(r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource)


def url_paths(command: list[str] | str) -> list[str]:
    text = command if isinstance(command, str) else " ".join(command)
    return URL_PATH.findall(text)


def assert_settings(env: dict[str, str], where: str) -> Settings:
    """Every MILLRACE_*/KAFKA_* name is a real setting and Millrace accepts the values."""
    unknown = sorted(k for k in env if SETTING_LIKE.match(k) and k not in SETTINGS)
    assert not unknown, f"{where}: not Millrace settings (see `millrace config`): {unknown}"
    return Settings.from_env({k: v for k, v in env.items() if k in SETTINGS})


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array form (`["a", "b"]`), or None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return cast(list[str], value)
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instr in self.all("ENV"):
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", instr.args):
                values[key] = value.strip('"')
        return values


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their first line number: continuations joined, comment lines dropped."""
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        yield start, " ".join(p for p in parts if p)
        parts = []
    if parts:
        yield start, " ".join(p for p in parts if p)


def parse_dockerfile(text: str) -> list[Stage]:
    """A small Dockerfile parser: stages (FROM ... AS name) and their instructions."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.I)
            assert match, f"Dockerfile line {number}: cannot read FROM {rest!r}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], match[1])
            stages.append(Stage(base, match[2]))
        elif not stages:
            assert keyword == "ARG", f"Dockerfile line {number}: only ARG may precede the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, number))
    return stages


def _flags_and_operands(args: str) -> tuple[dict[str, str], list[str]]:
    words = args.split()
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    return flags, [w for w in words if not w.startswith("--")]


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (a matched folder covers its files)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, pattern in _dockerignore_rules():
        if any(pattern.fullmatch(p) for p in prefixes):
            result = not negated
    return result


@cache
def stages() -> tuple[Stage, ...]:
    return tuple(parse_dockerfile(DOCKERFILE.read_text()))


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    found = stages()
    assert len(found) >= 2, "a builder stage and a runtime stage"
    assert all(s.base.startswith("python:3.11-slim") for s in found), [s.base for s in found]
    builder = [s for s in found[:-1] if s.name == "builder"]
    assert builder, "the wheel is built in a stage named builder"
    runs = " ".join(i.args for i in builder[0].all("RUN"))
    assert "pip wheel" in runs and "/opt/venv" in runs


def test_the_builder_compiles_the_parsers_into_the_venv_the_runtime_takes() -> None:
    """tests/test_native.py runs these steps on an installed wheel; the image must take them."""
    (builder,) = [s for s in stages() if s.name == "builder"]
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert "gcc" in runs and "python -m ops.native --tools-from uv.lock" in runs
    assert re.search(r"python -m ops\.native --config \S*pyproject\.toml", runs), runs
    assert "assert formats.NATIVE" in runs, "the builder checks that the parsers were compiled"


@pytest.mark.parametrize("with_chdb", ["false", "true"])
def test_builder_dependency_filter_leaves_out_only_chdb(with_chdb: str) -> None:
    runs = " ".join(i.args for s in stages() for i in s.all("RUN"))
    snippet = re.search(r'python -c "(.+?)" "\$WITH_CHDB"', runs)
    assert snippet, "the builder derives its requirements from pyproject.toml"
    result = subprocess.run(
        [sys.executable, "-c", snippet[1], with_chdb],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if with_chdb == "false":
        wanted = [d.replace("[chdb]", "") for d in wanted]
        assert "chdb" not in result.stdout
    assert result.stdout.splitlines() == wanted


def test_final_stage_runs_millrace_as_a_non_root_user_without_build_tools() -> None:
    final = stages()[-1]
    user = final.last("USER")
    assert user is not None, "the final stage sets USER"
    name = user.args.split(":")[0]
    assert name not in ("root", "0"), f"USER {user.args} is root"
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form() == ["millrace"]
    cmd = final.last("CMD")
    assert cmd is not None and (argv := cmd.exec_form()) is not None and cli_accepts(argv), cmd
    runs = " ".join(i.args for i in final.all("RUN"))
    for tool in ("apt-get install", "pip install", "gcc", "build-essential"):
        assert tool not in runs, f"the final stage installs {tool!r}; do that in the builder"
    copies = [_flags_and_operands(i.args)[0] for i in final.all("COPY")]
    assert {"from": "builder"} in copies, "the final stage takes the venv from the builder"


def test_final_stage_settings_listen_on_all_addresses() -> None:
    final = stages()[-1]
    settings = assert_settings(final.env(), "Dockerfile ENV")
    assert settings.host == "0.0.0.0"
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.args.split()}
    assert settings.port in exposed


def test_dockerfile_healthcheck_asks_real_endpoints() -> None:
    check = stages()[-1].last("HEALTHCHECK")
    assert check is not None
    command = check.args.split(" CMD ", 1)[1]
    argv = json.loads(command)
    paths = url_paths(argv)
    assert paths, argv
    for path in paths:
        assert path in gateway_paths() | worker_paths(), path


def test_the_builder_copies_every_package_the_wheel_is_made_of() -> None:
    """A package pyproject.toml builds into the wheel but the Dockerfile leaves out is missing
    from the image (`alerts` was: `millrace alerts` could not start in a container)."""
    packages = shipped_packages()
    (builder,) = [s for s in stages() if s.name == "builder"]
    copied = {
        source.rstrip("/")
        for instr in builder.all("COPY")
        if "from" not in _flags_and_operands(instr.args)[0]
        for source in _flags_and_operands(instr.args)[1][:-1]
    }
    assert packages <= copied, sorted(packages - copied)


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    names: list[str | None] = []
    for stage in stages():
        for instr in stage.all("COPY") + stage.all("ADD"):
            flags, operands = _flags_and_operands(instr.args)
            sources = (instr.exec_form() or operands)[:-1]
            assert sources, f"Dockerfile line {instr.line}: COPY without a source"
            if "from" in flags:
                assert flags["from"] in names, f"line {instr.line}: no earlier stage {flags['from']!r}"
                continue
            for source in sources:
                matches = list(ROOT.glob(source))
                assert matches, f"Dockerfile line {instr.line}: {source} does not exist in the repo"
                for match in matches:
                    files = [match] if match.is_file() else [p for p in match.rglob("*.py")]
                    for f in files:
                        rel = f.relative_to(ROOT).as_posix()
                        assert not ignored(rel), f"Dockerfile line {instr.line}: .dockerignore drops {rel}"
        names.append(stage.name)


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (".millrace/dev-key", ".venv/bin/python", ".git/HEAD", "tests/conftest.py"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"
    assert ignored("millrace/__pycache__/cli.cpython-311.pyc")
    assert not ignored("ops/cli.py") and not ignored("schemas/migrations/001_logs.sql")


# --- docker compose --------------------------------------------------------------------------


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose's ${VAR:-default} with nothing set in the environment."""
    return _INTERPOLATION.sub(lambda m: m[2] or "", str(value)).replace("$$", "$")


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return cast(dict[str, Any], loaded)


def services() -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], compose()["services"])


def millrace_services() -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in services().items() if "build" in s or str(s.get("image", "")).startswith("millrace")
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): interpolate(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_compose_runs_the_millrace_roles() -> None:
    ours = millrace_services()
    commands = {n: s.get("command") for n, s in ours.items()}
    assert {"gateway", "worker", "alerts", "migrate", "topics"} <= {c[0] for c in commands.values() if c}
    assert services()["kafka"]["image"] == "apache/kafka:4.1.1"
    assert str(services()["clickhouse"]["image"]).startswith("clickhouse/clickhouse-server")


@pytest.mark.parametrize("name", sorted(millrace_services()))
def test_compose_command_is_a_real_millrace_subcommand(name: str) -> None:
    command = millrace_services()[name].get("command")
    assert isinstance(command, list), f"{name}: give `command` as a list (ENTRYPOINT is millrace)"
    assert cli_accepts([str(c) for c in command]), f"{name}: `millrace {' '.join(command)}` does not parse"


@pytest.mark.parametrize("name", sorted(millrace_services()))
def test_compose_env_vars_are_real_settings(name: str) -> None:
    settings = assert_settings(environment(millrace_services()[name]), f"compose service {name}")
    assert not settings.embedded_store, f"{name}: containers use the ClickHouse server, not chDB"
    assert not settings.local_broker, f"{name}: containers use the kafka service"
    if millrace_services()[name]["command"] == ["gateway"]:
        assert settings.host == "0.0.0.0"


def test_compose_wires_kafka_and_clickhouse_consistently() -> None:
    kafka, clickhouse = environment(services()["kafka"]), environment(services()["clickhouse"])
    advertised = {a.split("://")[1] for a in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in millrace_services().items():
        env = environment(service)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] in advertised, name
        dsn = re.fullmatch(r"http://([^:]+):([^@]+)@clickhouse:8123", env["MILLRACE_CLICKHOUSE_DSN"])
        assert dsn, f"{name}: MILLRACE_CLICKHOUSE_DSN should be http://user:pass@clickhouse:8123"
        assert (dsn[1], dsn[2]) == (clickhouse["CLICKHOUSE_USER"], clickhouse["CLICKHOUSE_PASSWORD"]), name
    for name, service in services().items():
        if name not in millrace_services():
            assert not any(k.startswith("MILLRACE_") for k in environment(service)), name


def test_compose_kafka_takes_only_authenticated_clients_and_millrace_authenticates() -> None:
    """Audit F2: no PLAINTEXT listener, an authorizer that denies by default, and every
    Millrace service logs in as the principal the broker's JAAS line knows, with its password."""
    kafka = environment(services()["kafka"])
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    listeners = {entry.split("://")[0] for entry in kafka["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols)
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    jaas = kafka["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]
    for name, service in millrace_services().items():
        settings = assert_settings(environment(service), f"compose service {name}")
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == (
            "SASL_PLAINTEXT",
            "PLAIN",
        )
        assert f'user_{settings.kafka_sasl_username}="{settings.kafka_sasl_password}"' in jaas, name
    check = " ".join(services()["kafka"]["healthcheck"]["test"])
    assert "--command-config" in check, "the broker healthcheck must log in too"


def test_compose_dependencies_exist_and_wait_for_health() -> None:
    all_services = services()
    for name, service in all_services.items():
        for target, condition in depends_on(service).items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                check = all_services[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert all_services[target].get("restart") == "no", f"{target} is not a one-shot"
    for role in ("gateway", "worker"):
        deps = depends_on(all_services[role])
        assert deps["topics"] == deps["migrate"] == "service_completed_successfully", role
        assert deps["kafka"] == deps["clickhouse"] == "service_healthy", role
    assert depends_on(all_services["topics"]) == {"kafka": "service_healthy"}
    assert depends_on(all_services["migrate"]) == {"clickhouse": "service_healthy"}


def test_compose_long_running_services_have_real_healthchecks() -> None:
    for name, service in services().items():
        if service.get("restart") == "no" or service.get("profiles"):
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        if name in millrace_services():
            paths = url_paths(check["test"])
            known = gateway_paths() if service["command"] == ["gateway"] else worker_paths()
            assert paths and all(p in known for p in paths), f"{name}: {paths} not served"


def test_compose_has_two_gateways_behind_one_published_port_and_two_workers() -> None:
    all_services = services()
    gateway, worker = all_services["gateway"], all_services["worker"]
    assert gateway["deploy"]["replicas"] == 2 and worker["deploy"]["replicas"] == 2
    publishing = [n for n, s in all_services.items() if s.get("ports")]
    assert publishing == ["lb"], f"only the load balancer publishes a port, not {publishing}"
    assert all("container_name" not in all_services[n] for n in ("gateway", "worker"))
    partitions = int(environment(worker).get("MILLRACE_PARTITIONS", DEFAULTS["MILLRACE_PARTITIONS"]))
    assert worker["deploy"]["replicas"] <= partitions, "more workers than partitions would idle"
    config = HAPROXY.read_text()
    template = re.search(r"^\s*server-template\s+\S+\s+\d+-(\d+)\s+(\S+):(\d+)", config, flags=re.M)
    assert template, "haproxy.cfg has a server-template for the gateway replicas"
    assert template[2] == "gateway" and template[3] == environment(gateway)["MILLRACE_PORT"]
    assert int(template[1]) >= gateway["deploy"]["replicas"]
    check = re.search(r"http-check send meth GET uri (\S+)", config)
    assert check and check[1] in gateway_paths()
    volumes = [v for v in all_services["lb"]["volumes"] if v.startswith("./")]
    assert all((COMPOSE.parent / v.split(":")[0]).is_file() for v in volumes)


def test_compose_volumes_are_named_and_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for service in services().values():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used and used <= declared, f"undeclared: {used - declared}"
    assert {"kafka", "clickhouse"} <= {n for n, s in services().items() if s.get("volumes")}


def _docker_compose_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return "no Docker engine reachable: `docker info` timed out"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine reachable: {lines[-1] if lines else 'docker info failed'}"
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=10, check=False
    )
    if plugin.returncode != 0:
        return "the docker compose plugin is not installed"
    return None


def test_docker_compose_accepts_the_file() -> None:
    reason = _docker_compose_unavailable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--profile", "tools", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes ----------------------------------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load((K8S / "kustomization.yaml").read_text()))


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                assert isinstance(doc, dict), f"{name}: a document is not a mapping"
                docs.append(doc)
    return tuple(docs)


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], workload["spec"]["template"]["spec"])


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("Job")


def config_env() -> dict[str, str]:
    return cast(dict[str, str], one("ConfigMap", "millrace-config")["data"])


def secret_env() -> dict[str, str]:
    """The settings the Secrets hold: the ClickHouse DSN and the Kafka principal."""
    return {
        **cast(dict[str, str], one("Secret", "millrace-clickhouse")["stringData"]),
        **cast(dict[str, str], one("Secret", "millrace-kafka")["stringData"]),
    }


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_manifests_parse_and_are_all_listed() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml resources differ from the files: {listed ^ on_disk}"
    for doc in manifests():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
    kinds = sorted(d["kind"] for d in manifests())
    for kind, count in {
        "Deployment": 3,  # gateway, worker, alert evaluator
        "Service": 1,
        "HorizontalPodAutoscaler": 1,
        "ScaledObject": 1,
        "PodDisruptionBudget": 2,
        "ConfigMap": 1,
        "Secret": 2,  # the ClickHouse DSN, the Kafka principal
        "TriggerAuthentication": 1,
        "Job": 1,
    }.items():
        assert kinds.count(kind) == count, f"{kind}: {kinds.count(kind)} (want {count})"
    assert one("HorizontalPodAutoscaler", "millrace-gateway")["apiVersion"] == "autoscaling/v2"
    assert one("ScaledObject", "millrace-worker")["apiVersion"] == "keda.sh/v1alpha1"
    assert kustomization().get("namespace")


def test_deployment_selectors_match_their_pod_labels() -> None:
    for deployment in of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector and selects(selector, deployment), deployment["metadata"]["name"]


def test_every_container_runs_a_real_millrace_command() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container["image"].split(":")[0] == "millrace", where
            assert "command" not in container, f"{where}: keep the image's ENTRYPOINT (millrace)"
            assert cli_accepts(container["args"]), f"{where}: `millrace {container['args']}` does not parse"
    roles = {w["metadata"]["name"]: [c["args"] for c in containers(w)] for w in workloads()}
    assert roles["millrace-gateway"] == [["gateway"]] and roles["millrace-worker"] == [["worker"]]
    assert roles["millrace-alerts"] == [["alerts"]]
    assert roles["millrace-setup"] == [["topics"], ["migrate"]], "topics first (init container), then migrate"


def test_k8s_env_vars_are_real_settings_and_the_dsn_is_secret() -> None:
    config, secret = config_env(), secret_env()
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values must be strings"
    assert set(config) <= SETTINGS, f"not settings: {set(config) - SETTINGS}"
    assert set(secret) <= SETTINGS, f"not settings: {set(secret) - SETTINGS}"
    assert "MILLRACE_CLICKHOUSE_DSN" in secret and "MILLRACE_CLICKHOUSE_DSN" not in config
    settings = assert_settings({**config, **secret}, "ConfigMap + Secret")
    assert settings.host == "0.0.0.0" and not settings.embedded_store and not settings.local_broker
    configmaps = {d["metadata"]["name"] for d in of_kind("ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind("Secret")}
    for workload in workloads():
        assert pod_spec(workload).get("enableServiceLinks") is False, "service links inject *_PORT variables"
        for container in containers(workload):
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
            assert_settings(env, container["name"])
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets


def test_k8s_workloads_and_keda_authenticate_to_kafka() -> None:
    """Audit F2: Millrace's Kafka settings name a SASL principal whose password is a Secret
    every Millrace container reads, and KEDA's lag trigger logs in with the same one."""
    config, secret = config_env(), secret_env()
    settings = assert_settings({**config, **secret}, "ConfigMap + Secret")
    assert settings.kafka_security_protocol.startswith("SASL_")
    assert "KAFKA_SASL_PASSWORD" in secret and "KAFKA_SASL_PASSWORD" not in config
    for workload in workloads():
        for container in containers(workload):
            refs = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            assert "millrace-kafka" in refs, f"{container['name']} lacks the Kafka credentials"
    (trigger,) = one("ScaledObject", "millrace-worker")["spec"]["triggers"]
    keda_names = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    assert trigger["metadata"]["sasl"] == keda_names[settings.kafka_sasl_mechanism]
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]["secretTargetRef"]
    kafka_secret = one("Secret", "millrace-kafka")["stringData"]
    assert {(a["parameter"], a["name"]) for a in auth} == {
        ("username", "millrace-kafka"),
        ("password", "millrace-kafka"),
    }
    assert all(a["key"] in kafka_secret for a in auth)


def test_services_select_pods_and_target_real_container_ports() -> None:
    port = int(config_env()["MILLRACE_PORT"])
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        targets = [d for d in of_kind("Deployment") if selects(selector, d)]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} deployments"
        container_ports = [p for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])]
        for service_port in service["spec"]["ports"]:
            target = service_port["targetPort"]
            matching = [p for p in container_ports if target in (p.get("name"), p["containerPort"])]
            assert matching, f"targetPort {target} is no container port"
            assert matching[0]["containerPort"] == port, "the gateway listens on MILLRACE_PORT"


def _probe_port(container: dict[str, Any], port: int | str) -> int:
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    raise AssertionError(f"probe port {port} is not a port of container {container['name']}")


def test_probes_ask_real_paths_on_real_ports() -> None:
    gateway = one("Deployment", "millrace-gateway")
    (container,) = pod_spec(gateway)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["path"] in gateway_paths(), f"gateway {kind}: {probe['path']} is not a route"
        assert _probe_port(container, probe["port"]) == int(config_env()["MILLRACE_PORT"])

    worker = one("Deployment", "millrace-worker")
    (container,) = pod_spec(worker)["containers"]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]
        # workers/server.py binds its port to 127.0.0.1: kubelet's httpGet/tcpSocket would
        # go to the pod IP and fail, so the probe runs inside the container.
        assert "exec" in probe, f"worker {kind} must run in the container (loopback-only port)"
        command = probe["exec"]["command"]
        paths = url_paths(command)
        assert paths and all(p in worker_paths() for p in paths), f"worker {kind}: {paths}"
        assert "MILLRACE_WORKER_QUERY_PORT" in " ".join(command)
        assert f"'{DEFAULTS['MILLRACE_WORKER_QUERY_PORT']}'" in " ".join(command), "fallback = default"


def test_containers_have_resource_requests_and_limits() -> None:
    for workload in workloads():
        for container in containers(workload):
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{container['name']} {section}"


def test_autoscalers_target_existing_deployments_once() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    hpa = one("HorizontalPodAutoscaler", "millrace-gateway")["spec"]
    scaled = one("ScaledObject", "millrace-worker")["spec"]
    targets = [hpa["scaleTargetRef"], scaled["scaleTargetRef"]]
    assert all(t["kind"] == "Deployment" and t["name"] in deployments for t in targets), targets
    assert [t["name"] for t in targets] == ["millrace-gateway", "millrace-worker"]
    for name in ("millrace-gateway", "millrace-worker"):
        assert "replicas" not in deployments[name]["spec"], f"{name}: the autoscaler owns the replica count"
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]


def test_keda_scales_workers_on_lag_up_to_one_per_partition() -> None:
    config = config_env()
    spec = one("ScaledObject", "millrace-worker")["spec"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
    assert metadata["consumerGroup"] == config["MILLRACE_CONSUMER_GROUP"] == "millrace-workers"
    assert metadata["topic"] == config["MILLRACE_TOPIC"] == "millrace.raw"
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(metadata["lagThreshold"]) > 0
    assert spec["maxReplicaCount"] == int(config["MILLRACE_PARTITIONS"]), "one worker per partition at most"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_pod_disruption_budgets_select_the_deployments() -> None:
    covered = []
    for pdb in of_kind("PodDisruptionBudget"):
        spec = pdb["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec), pdb["metadata"]["name"]
        matched = [
            d["metadata"]["name"]
            for d in of_kind("Deployment")
            if selects(spec["selector"]["matchLabels"], d)
        ]
        assert len(matched) == 1, f"PDB {pdb['metadata']['name']} selects {matched}"
        covered += matched
    assert sorted(covered) == ["millrace-gateway", "millrace-worker"]


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kustomize is built into it)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in built) == sorted(d["kind"] for d in manifests())
    namespaced = [d for d in built if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {kustomization()["namespace"]}


# --- Grafana ---------------------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text()))


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard()["panels"] for t in p.get("targets", [])]


def metric_of(series: str) -> str:
    """The metric a series name belongs to: histograms expose _bucket, _sum and _count."""
    if series in COUNTERS_AND_GAUGES:
        return series
    for suffix in HISTOGRAM_SERIES:
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    raise AssertionError(f"{series} is not a Millrace metric series")


def test_dashboard_parses_with_unique_panels_on_the_datasource_variable() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    for title, target in targets():
        assert target["datasource"]["uid"] == "${datasource}", title
        assert target["expr"].strip(), title


def test_dashboard_queries_use_only_millrace_metrics_and_their_labels() -> None:
    used = set()
    for title, target in targets():
        expr = target["expr"]
        metrics = {metric_of(s) for s in re.findall(r"\bmillrace_\w+", expr)}
        assert metrics, f"{title}: {expr} uses no Millrace metric"
        used |= metrics
        labels: set[str] = set().union(*({**COUNTERS_AND_GAUGES, **HISTOGRAMS}[m] for m in metrics))
        if metrics & set(HISTOGRAMS):
            labels.add("le")
        grouped = {g.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for g in group.split(",")}
        matched = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert grouped | matched | legend <= labels, f"{title}: unknown labels {(grouped | matched) - labels}"
    assert used == set(COUNTERS_AND_GAUGES) | set(HISTOGRAMS), f"unused: {set(COUNTERS_AND_GAUGES) - used}"


@pytest.mark.parametrize(
    ("panel", "needle"),
    [
        ("Ingest rate by dialect", "millrace_logs_accepted_total"),
        ("Error rate by status", "millrace_requests_total"),
        ("Produce latency (p50 / p99)", "millrace_produce_seconds_bucket"),
        ("Consumer lag by partition", "millrace_consumer_lag"),
        ("Rows inserted/s by table", "millrace_rows_inserted_total"),
        ("Insert latency (p50 / p99)", "millrace_insert_seconds_bucket"),
        ("Insert failures", "millrace_insert_failures_total"),
        ("Dead letters by code", "millrace_dead_letters_total"),
        ("Alert evaluations and transitions", "millrace_alert_transitions_total"),
        ("Alert webhooks by outcome", "millrace_alert_webhooks_total"),
    ],
)
def test_dashboard_has_the_panel(panel: str, needle: str) -> None:
    exprs = [t["expr"] for title, t in targets() if title == panel]
    assert exprs, f"no panel titled {panel!r}"
    assert any(needle in e for e in exprs)
    if "p50 / p99" in panel:
        assert any("histogram_quantile(0.5," in e for e in exprs)
        assert any("histogram_quantile(0.99," in e for e in exprs)
